package dev.loramerge.bench;

import ai.djl.Device;
import java.util.Locale;

/** The {@code shape} and {@code device} parameters the JMH kernels share. */
final class KernelParams {
  private KernelParams() {}

  /** {@code "ROWSxCOLUMNS"} as {rows, columns}. */
  static long[] shape(String shape) {
    String[] sides = shape.split("x");
    if (sides.length != 2) {
      throw new IllegalArgumentException(String.format(Locale.ROOT, "shape '%s' is not ROWSxCOLUMNS, e.g. 1280x10240", shape));
    }
    return new long[] {Long.parseLong(sides[0]), Long.parseLong(sides[1])};
  }

  /**
   * {@code cpu}, or {@code gpu} where DJL sees one: the parameter exists for GPU machines, and a
   * run that asks for a GPU must not quietly measure the CPU ({@link Devices#parse}).
   */
  static Device device(String device) {
    return Devices.parse(device, "run with -p device=cpu");
  }
}

package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.util.cuda.CudaUtils;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;
import java.util.concurrent.TimeUnit;

/**
 * What the device benchmarks share: the device a {@code cpu}/{@code gpu} parameter names (never
 * DJL's implicit default), waiting for a device's queued work, byte comparisons of arrays on any
 * two devices, and whether the JNI library can hold bf16 tensors at all.
 */
final class Devices {
  /** The exit status of a JVM that a native {@code std::terminate} took down (SIGABRT). */
  private static final int ABORTED = 134;

  private Devices() {}

  /**
   * {@code cpu}, or {@code gpu} where DJL sees one. A run that asks for a GPU must not quietly
   * measure the CPU: without one it stops here, with {@code hint} saying what to run instead.
   *
   * @throws IllegalStateException for {@code gpu} when DJL sees no GPU
   * @throws IllegalArgumentException for any other name
   */
  static Device parse(String device, String hint) {
    switch (device) {
      case "cpu":
        return Device.cpu();
      case "gpu":
        Engine engine = Engine.getInstance();
        if (engine.getGpuCount() == 0) {
          throw new IllegalStateException(
              String.format(
                  Locale.ROOT,
                  "no GPU visible to DJL (%s %s, Engine.getGpuCount() == 0): a GPU build of libtorch and its JNI library"
                      + " are needed (see gpu/README.md); %s",
                  engine.getEngineName(), engine.getVersion(), hint));
        }
        return Device.gpu();
      default:
        throw new IllegalArgumentException(String.format(Locale.ROOT, "unknown device '%s'; expected cpu or gpu", device));
    }
  }

  /**
   * Returns once the work queued on {@code array}'s device has run: a read of one element back to
   * the host waits for the stream every libtorch thread queues on (the default one). Nothing to
   * wait for on the CPU, where every operation runs before it returns.
   */
  static void await(NDArray array) {
    if (!array.getDevice().isGpu()) {
      return;
    }
    try (NDArray first = array.get(0)) {
      first.toByteBuffer();
    }
  }

  /** The GPU memory in use on {@code device} (all processes, cudaMemGetInfo); empty on the CPU. */
  static OptionalLong memoryUsed(Device device) {
    return device.isGpu() ? OptionalLong.of(CudaUtils.getGpuMemory(device).getUsed()) : OptionalLong.empty();
  }

  /**
   * A copy of {@code array} on {@code manager}'s device, owned by {@code manager}: libtorch's own
   * copy, on one device or between two. (DJL's {@code toDevice} to the array's own device returns
   * the same tensor even when asked for a copy.)
   */
  static NDArray copyTo(NDArray array, NDManager manager) {
    NDArray copy = array.getDevice().equals(manager.getDevice()) ? array.duplicate() : array.toDevice(manager.getDevice(), true);
    copy.attach(manager);
    return copy;
  }

  /** How many elements of {@code size} bytes differ, bit for bit, between {@code a} and {@code b}. */
  static long differingElements(ByteBuffer a, ByteBuffer b, int size) {
    if (a.remaining() != b.remaining()) {
      throw new IllegalArgumentException(String.format(Locale.ROOT, "%d bytes against %d", a.remaining(), b.remaining()));
    }
    ByteBuffer left = a.duplicate();
    ByteBuffer right = b.duplicate();
    int base = left.position();
    int end = left.limit();
    int offset = right.position() - base;
    long count = 0;
    int from = base;
    while (from < end) {
      int at = left.position(from).slice().mismatch(right.position(from + offset).slice());
      if (at < 0) {
        break;
      }
      count++;
      // The next element after the one holding the first differing byte.
      from = from + at - (from + at - base) % size + size;
    }
    return count;
  }

  /** {@link #differingElements} of two arrays of the same type and shape, on any devices. */
  static long differingElements(NDArray a, NDArray b) {
    if (a.getDataType() != b.getDataType() || !a.getShape().equals(b.getShape())) {
      throw new IllegalArgumentException(
          String.format(Locale.ROOT, "%s %s against %s %s", a.getDataType(), a.getShape(), b.getDataType(), b.getShape()));
    }
    // toByteBuffer() copies into a heap array at about 1 GB/s, which made the SDXL comparison take
    // minutes on a GPU host; host copies read through their direct views take a memcpy each.
    try (NDManager scratch = NDManager.newBaseManager(Device.cpu())) {
      return differingElements(hostBytes(a, scratch), hostBytes(b, scratch), a.getDataType().getNumOfBytes());
    }
  }

  /**
   * The bytes of a host copy of {@code array} owned by {@code scratch}, valid until it closes: a
   * view of the copy, or of a contiguous copy of it that DJL attaches to the same manager.
   */
  private static ByteBuffer hostBytes(NDArray array, NDManager scratch) {
    return copyTo(array, scratch).toByteBuffer(true);
  }

  /** Weights compared with others of the same names: the elements compared, and the elements and weights that differ in any byte. */
  record Comparison(long elements, long differingElements, long differingWeights) {
    static final Comparison NONE = new Comparison(0, 0, 0);

    Comparison plus(Comparison other) {
      return new Comparison(
          elements + other.elements, differingElements + other.differingElements, differingWeights + other.differingWeights);
    }
  }

  /** Every array of {@code weights} against the array of the same name in {@code others}, by {@link #differingElements}. */
  static Comparison compare(Map<String, NDArray> weights, Map<String, NDArray> others) {
    long elements = 0;
    long differingElements = 0;
    long differingWeights = 0;
    for (Map.Entry<String, NDArray> weight : weights.entrySet()) {
      long differing = differingElements(weight.getValue(), others.get(weight.getKey()));
      elements += weight.getValue().size();
      differingElements += differing;
      differingWeights += differing == 0 ? 0 : 1;
    }
    return new Comparison(elements, differingElements, differingWeights);
  }

  /**
   * Whether this process's JNI library can make bf16 tensors on {@code device}. DJL 0.35.1's own
   * library calls {@code std::terminate} on them, which no Java code can catch, so a child JVM on
   * the same class path, properties and environment tries ({@link Bf16Probe}) and its exit status
   * answers. The message says what was seen.
   */
  static Bf16 probeBf16(Device device) throws IOException {
    String launcher = ProcessHandle.current().info().command().orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    List<String> command = new ArrayList<>();
    command.add(launcher);
    for (String argument : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
      if (argument.startsWith("-D")) {
        command.add(argument);
      }
    }
    command.addAll(List.of("-cp", System.getProperty("java.class.path"), Bf16Probe.class.getName(), device.isGpu() ? "gpu" : "cpu"));
    ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
    Process process = builder.start();
    String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
    int status;
    try {
      if (!process.waitFor(120, TimeUnit.SECONDS)) {
        process.destroyForcibly();
        return new Bf16(false, "the bf16 probe did not finish in 120 s");
      }
      status = process.exitValue();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while the bf16 probe ran", e);
    }
    String last = output.lines().filter(line -> line.startsWith(Bf16Probe.PREFIX)).reduce((first, second) -> second).orElse("");
    if (status == 0) {
      return new Bf16(true, last.isEmpty() ? "bf16 tensors work" : last.substring(Bf16Probe.PREFIX.length()));
    }
    return new Bf16(
        false,
        status == ABORTED
            ? "a bf16 tensor aborts the JVM (exit 134, std::terminate): the JNI library lacks gpu/patches/0001-bfloat16.patch"
            : String.format(Locale.ROOT, "the bf16 probe exited with status %d: %s", status, last.isEmpty() ? tail(output) : last));
  }

  private static String tail(String output) {
    List<String> lines = output.lines().toList();
    return String.join(" | ", lines.subList(Math.max(0, lines.size() - 3), lines.size()));
  }

  /** The answer of {@link #probeBf16}. */
  record Bf16(boolean supported, String message) {
    Map<String, Object> json() {
      return Map.of("supported", supported, "message", message);
    }
  }

  /** Seeded N(0, deviation²) values of {@code shape} in {@code type}, made by libtorch on {@code manager}'s device. */
  static NDArray gaussian(NDManager manager, Shape shape, double deviation, DataType type) {
    try (NDArray values = manager.randomNormal(0, (float) deviation, shape, DataType.FLOAT32)) {
      return values.toType(type, true);
    }
  }
}

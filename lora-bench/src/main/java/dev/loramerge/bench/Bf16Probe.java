package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Locale;

/**
 * Run by {@link Devices#probeBf16} in a JVM of its own, since DJL 0.35.1's JNI library takes the
 * process down on a bf16 tensor: makes bf16 tensors on the device of its argument ({@code cpu} or
 * {@code gpu}) from a buffer and by a cast, and reads them back. Exits 0 when the values and the
 * reported type are right, 1 when not; an unpatched JNI library aborts (exit 134) before either.
 */
final class Bf16Probe {
  static final String PREFIX = "bf16 probe: ";

  private Bf16Probe() {}

  public static void main(String[] args) {
    Device device = args.length > 0 && args[0].equals("gpu") ? Device.gpu() : Device.cpu();
    // 1.5, -2, 2^-130 (subnormal) and 3.140625: exact in bf16 (0x3FC0, 0xC000, 0x0008, 0x4049).
    float[] values = {1.5f, -2f, 0x1p-130f, 3.140625f};
    short[] bits = {0x3FC0, (short) 0xC000, 0x0008, 0x4049};
    try (NDManager manager = NDManager.newBaseManager(device)) {
      ByteBuffer buffer = ByteBuffer.allocateDirect(2 * bits.length).order(ByteOrder.LITTLE_ENDIAN);
      for (short bit : bits) {
        buffer.putShort(bit);
      }
      buffer.flip();
      NDArray fromBuffer = manager.create(buffer, new Shape(bits.length), DataType.BFLOAT16);
      NDArray cast = manager.create(values).toType(DataType.BFLOAT16, false);
      float[] back = fromBuffer.toType(DataType.FLOAT32, false).toFloatArray();
      ByteBuffer castBytes = cast.toByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
      short[] castBits = new short[bits.length];
      castBytes.asShortBuffer().get(castBits);
      boolean ok =
          fromBuffer.getDataType() == DataType.BFLOAT16
              && cast.getDataType() == DataType.BFLOAT16
              && Arrays.equals(back, values)
              && Arrays.equals(castBits, bits)
              && fromBuffer.getDevice().equals(device);
      System.out.println(
          PREFIX
              + String.format(
                  Locale.ROOT,
                  "on %s: created %s, cast %s, read back %s, cast bits %s: %s",
                  fromBuffer.getDevice(), fromBuffer.getDataType(), cast.getDataType(), Arrays.toString(back),
                  Arrays.toString(castBits), ok ? "bf16 tensors work" : "WRONG (expected " + Arrays.toString(values) + ")"));
      System.exit(ok ? 0 : 1);
    }
  }
}

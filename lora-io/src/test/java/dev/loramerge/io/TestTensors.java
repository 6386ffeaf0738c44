package dev.loramerge.io;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import java.nio.ByteBuffer;
import java.util.Random;

/** Seeded tensors and reference roundings the layout tests share. */
final class TestTensors {
  private TestTensors() {}

  /** Gaussian values × 0.05 from {@code random}, rounded once to {@code dtype}. */
  static TensorData gaussian(Random random, DType dtype, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }

  /** {@code value} rounded to the nearest bf16, ties to even, by its bits (independent of the library's rounding). */
  static double bf16(double value) {
    long bits = Double.doubleToLongBits(value);
    // bf16 keeps 7 of double's 52 fraction bits.
    long dropped = 52 - 7;
    long half = 1L << (dropped - 1);
    long rest = bits & ((1L << dropped) - 1);
    long kept = bits >>> dropped;
    if (rest > half || (rest == half && (kept & 1) == 1)) {
      kept++;
    }
    return Double.longBitsToDouble(kept << dropped);
  }

  /** {@code tensor} rounded once to {@code dtype}; float8 codes by the tests' own rounding ({@link AdapterKindsFuseTest.Nearest}). */
  static TensorData typed(TensorData tensor, DType dtype) {
    double[] values = tensor.toDoubleArray();
    if (dtype.byteSize() >= 2) {
      return TensorData.ofDoubles(values, dtype, tensor.shape());
    }
    byte[] codes = new byte[values.length];
    for (int i = 0; i < values.length; i++) {
      codes[i] = (byte) AdapterKindsFuseTest.Nearest.code(values[i], dtype);
    }
    return TensorData.of(dtype, tensor.shape(), ByteBuffer.wrap(codes));
  }
}

package dev.loramerge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.junit.jupiter.api.Test;

class TensorDataTest {
  @Test
  void decodesEveryFloatTypeExactly() {
    double[] values = {0, 1, -2.5, 0.1, 65504, -1e-7};
    for (DType dtype : new DType[] {DType.F64, DType.F32, DType.F16, DType.BF16}) {
      TensorData tensor = TensorData.ofDoubles(values, dtype, 2, 3);
      double[] decoded = tensor.toDoubleArray();
      for (int i = 0; i < values.length; i++) {
        double expected = roundTo(dtype, values[i]);
        assertThat(decoded[i]).as("%s element %d", dtype, i).isEqualTo(expected);
      }
      assertThat(tensor.byteSize()).isEqualTo(6L * dtype.byteSize());
    }
  }

  @Test
  void aRangeReadsAndEncodesAsTheWholeTensorDoes() {
    java.util.SplittableRandom random = new java.util.SplittableRandom(7);
    float[] values = new float[10_000];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(-30, 20)));
    }
    for (DType dtype : new DType[] {DType.F64, DType.F32, DType.F16, DType.BF16}) {
      TensorData whole = TensorData.ofFloats(values, dtype, values.length);
      float[] range = new float[5000];
      whole.readFloats(1234, range, 4321);
      float[] expected = new float[4321];
      for (int i = 0; i < expected.length; i++) {
        expected[i] = (float) whole.getDouble(1234 + i);
      }
      assertThat(java.util.Arrays.copyOf(range, 4321)).as("%s elements 1234..5554 read as floats", dtype).containsExactly(expected);
      assertThat(java.util.Arrays.copyOfRange(whole.toFloatArray(), 1234, 1234 + 4321))
          .as("%s elements 1234..5554 of the whole tensor's floats", dtype)
          .containsExactly(expected);
      ByteBuffer encoded = ByteBuffer.allocate(values.length * dtype.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
      for (int first = 0; first < values.length; first += 3000) {
        int count = Math.min(3000, values.length - first);
        dev.loramerge.internal.numeric.FloatFormats.encode(dtype, java.util.Arrays.copyOfRange(values, first, first + count), count, encoded, first);
      }
      assertThat(encoded.rewind()).as("%s encoded 3000 elements at a time", dtype).isEqualTo(whole.bytes());
    }
  }

  private static double roundTo(DType dtype, double value) {
    switch (dtype) {
      case F64:
        return value;
      case F32:
        return (float) value;
      case F16:
        return dev.loramerge.internal.numeric.FloatFormats.fromFloat16(dev.loramerge.internal.numeric.FloatFormats.toFloat16(value));
      case BF16:
        return dev.loramerge.internal.numeric.FloatFormats.fromBFloat16(dev.loramerge.internal.numeric.FloatFormats.toBFloat16(value));
      default:
        throw new AssertionError(dtype);
    }
  }

  @Test
  void floatsRoundOnceToEachTypeAndNarrowTypesWidenExactly() {
    java.util.SplittableRandom random = new java.util.SplittableRandom(3);
    float[] values = new float[4096];
    for (int i = 0; i < values.length; i++) {
      // Mostly ordinary magnitudes, some far outside fp16's range, some any bits at all.
      values[i] = i % 8 == 7
          ? Float.intBitsToFloat(random.nextInt())
          : (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(-30, 20)));
    }
    double[] exact = new double[values.length];
    for (int i = 0; i < values.length; i++) {
      exact[i] = values[i];
    }
    for (DType dtype : new DType[] {DType.F64, DType.F32, DType.F16, DType.BF16}) {
      TensorData fromFloats = TensorData.ofFloats(values, dtype, 64, 64);
      assertThat(fromFloats).as("%s from floats", dtype).isEqualTo(TensorData.ofDoubles(exact, dtype, 64, 64));
      float[] widened = fromFloats.toFloatArray();
      double[] wide = fromFloats.toDoubleArray();
      for (int i = 0; i < widened.length; i++) {
        double reference = decode(fromFloats.bytes(), dtype, i);
        assertThat(Double.valueOf(wide[i])).as("%s element %d as double (NaN equal to NaN)", dtype, i).isEqualTo(Double.valueOf(reference));
        assertThat(Float.valueOf(widened[i])).as("%s element %d as float", dtype, i).isEqualTo(Float.valueOf((float) reference));
      }
    }
  }

  /** Element {@code i} of little-endian {@code bytes}, decoded on its own from its bits. */
  private static double decode(ByteBuffer bytes, DType dtype, int i) {
    switch (dtype) {
      case F64:
        return bytes.getDouble(i * 8);
      case F32:
        return bytes.getFloat(i * 4);
      case F16:
        return dev.loramerge.internal.numeric.FloatFormats.fromFloat16(bytes.getShort(i * 2));
      case BF16:
        return dev.loramerge.internal.numeric.FloatFormats.fromBFloat16(bytes.getShort(i * 2));
      default:
        throw new AssertionError(dtype);
    }
  }

  @Test
  void rejectsBytesThatDoNotFillTheShape() {
    ByteBuffer bytes = ByteBuffer.allocate(10);
    assertThatThrownBy(() -> TensorData.of(DType.F32, new long[] {2, 2}, bytes))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("F32 [2, 2] needs 16 bytes, got 10");
  }

  @Test
  void isImmutable() {
    long[] shape = {2};
    ByteBuffer bytes = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putFloat(1).putFloat(2).flip();
    TensorData tensor = TensorData.of(DType.F32, shape, bytes);
    shape[0] = 99;
    tensor.shape()[0] = 42;
    assertThat(tensor.shape()).containsExactly(2);
    assertThat(tensor.bytes().isReadOnly()).isTrue();
  }

  @Test
  void equalityIsByContent() {
    TensorData a = TensorData.ofFloats(new float[] {1, 2, 3, 4}, 2, 2);
    assertThat(a).isEqualTo(TensorData.ofFloats(new float[] {1, 2, 3, 4}, 2, 2));
    assertThat(a).isNotEqualTo(TensorData.ofFloats(new float[] {1, 2, 3, 4}, 4));
    assertThat(a).isNotEqualTo(a.to(DType.F16));
    assertThat(a.to(DType.F16).to(DType.F32)).isEqualTo(a);
  }

  @Test
  void toNDArrayCopiesIntoTheCallersManager() {
    TensorData tensor = TensorData.ofDoubles(new double[] {1, -2, 3.5, 4}, DType.F16, 2, 2);
    try (NDManager manager = NDManager.newBaseManager()) {
      NDArray array = tensor.toNDArray(manager);
      array.addi(1);
      assertThat(array.toFloatArray()).containsExactly(2, -1, 4.5f, 5);
      assertThat(array.getShape().getShape()).containsExactly(2, 2);
    }
    assertThat(tensor.toFloatArray()).as("the source is untouched").containsExactly(1, -2, 3.5f, 4);
  }
}

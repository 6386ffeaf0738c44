package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.ByteBuffer;
import java.util.Random;
import org.junit.jupiter.api.Test;

class NdArraysTest {
  @Test
  void powersOfTwoAreTheNormalFloatsWithAnEmptyMantissa() {
    for (double value : new double[] {1, 0.5, 0.25, 2, 1024, -0.5, 0x1p-126, 0x1p127}) {
      assertThat(NdArrays.isPowerOfTwo(value)).as("%s", value).isTrue();
    }
    double[] others = {
      0.75, 0.7, 3, 0, -0.0, Double.NaN, Double.POSITIVE_INFINITY, 0x1p-127, 0x1p-130, 0x1p128, 1 + 0x1p-30
    };
    for (double value : others) {
      assertThat(NdArrays.isPowerOfTwo(value)).as("%s", value).isFalse();
    }
  }

  @Test
  void floatValuesAreTheArraysValuesContiguousOrNot() {
    Random random = new Random(7);
    float[] values = new float[6 * 5];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) random.nextGaussian();
    }
    try (NDManager manager = NDManager.newBaseManager()) {
      NDArray matrix = manager.create(values, new Shape(6, 5));
      assertThat(NdArrays.floatValues(matrix)).containsExactly(values);
      NDArray transposed = matrix.transpose();
      assertThat(NdArrays.floatValues(transposed))
          .as("a transposed view is read in its logical order")
          .containsExactly(transposed.toFloatArray());
      assertThat(NdArrays.floatValues(transposed)).isNotEqualTo(values);
      assertThat(NdArrays.floatValues(matrix.toType(DataType.FLOAT64, false)))
          .as("float64 values are rounded to float32")
          .containsExactly(values);
    }
  }

  @Test
  void copyInParallelCopiesEveryChunkBetweenThePositions() {
    // Three 4 MiB chunks and a ragged end, between buffers whose positions are not 0.
    int length = 3 * (1 << 22) + 12345;
    ByteBuffer source = ByteBuffer.allocateDirect(length + 7);
    Random random = new Random(11);
    for (int i = 0; i < source.capacity(); i++) {
      source.put(i, (byte) random.nextInt());
    }
    source.position(7);
    ByteBuffer target = ByteBuffer.allocateDirect(length + 20);
    target.position(13);
    NdArrays.copyInParallel(source, target);
    assertThat(source.position()).as("source position").isEqualTo(7);
    assertThat(target.position()).as("target position").isEqualTo(13);
    for (int i = 0; i < length; i++) {
      if (target.get(13 + i) != source.get(7 + i)) {
        throw new AssertionError("byte " + i + " differs: " + target.get(13 + i) + " for " + source.get(7 + i));
      }
    }
    assertThat(target.get(13 + length)).as("the byte after the copy is untouched").isZero();
    assertThat(target.get(12)).as("the byte before the copy is untouched").isZero();
  }

  @Test
  void copyInParallelRejectsATargetTooSmall() {
    assertThatThrownBy(() -> NdArrays.copyInParallel(ByteBuffer.allocate(10), ByteBuffer.allocate(9)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("10 bytes");
  }
}

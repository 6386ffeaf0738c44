package dev.loramerge.internal;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
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
}

package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * {@link OrderedProducts}: every entry is the chain of fused multiply-adds in increasing inner
 * index from +0, on the Vector API and in scalar code alike, for shapes whose rows, columns and
 * widths leave tails of every size. Values with cancelling magnitudes make other orders give
 * other bits.
 */
class OrderedProductsTest {
  private static final int[][] SHAPES = {{1, 1, 1}, {4, 7, 48}, {5, 13, 42}, {9, 33, 5}, {3, 0, 17}, {12, 64, 74}, {7, 21, 1}};

  @Test
  void floatProductsChainEachEntryInIncreasingInnerIndex() {
    SplittableRandom random = new SplittableRandom(11);
    for (int[] shape : SHAPES) {
      int rows = shape[0];
      int inner = shape[1];
      int cols = shape[2];
      float[] a = cancelling(random, rows * inner);
      float[] b = cancelling(random, inner * cols);
      float[] expected = new float[rows * cols];
      for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
          float sum = 0;
          for (int k = 0; k < inner; k++) {
            sum = Math.fma(a[i * inner + k], b[k * cols + j], sum);
          }
          expected[i * cols + j] = sum;
        }
      }
      for (boolean vectorized : vectorizedAndNot()) {
        assertThat(bits(OrderedProducts.times(a, rows, inner, b, cols, vectorized)))
            .as("%d×%d times %d×%d, Vector API %s", rows, inner, inner, cols, vectorized)
            .containsExactly(bits(expected));
      }
      float[] aByColumns = transpose(a, rows, inner);
      for (boolean vectorized : vectorizedAndNot()) {
        assertThat(bits(OrderedProducts.transposeTimes(aByColumns, inner, rows, b, cols, vectorized)))
            .as("(%d×%d)ᵀ times %d×%d, Vector API %s", inner, rows, inner, cols, vectorized)
            .containsExactly(bits(expected));
      }
    }
  }

  @Test
  void doubleProductsChainEachEntryInIncreasingInnerIndex() {
    SplittableRandom random = new SplittableRandom(12);
    for (int[] shape : SHAPES) {
      int rows = shape[0];
      int inner = shape[1];
      int cols = shape[2];
      double[] a = cancellingDoubles(random, rows * inner);
      double[] b = cancellingDoubles(random, inner * cols);
      double[] expected = new double[rows * cols];
      for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
          double sum = 0;
          for (int k = 0; k < inner; k++) {
            sum = Math.fma(a[i * inner + k], b[k * cols + j], sum);
          }
          expected[i * cols + j] = sum;
        }
      }
      double[] aByColumns = new double[a.length];
      for (int i = 0; i < rows; i++) {
        for (int k = 0; k < inner; k++) {
          aByColumns[k * rows + i] = a[i * inner + k];
        }
      }
      for (boolean vectorized : vectorizedAndNot()) {
        assertThat(longBits(OrderedProducts.times(a, rows, inner, b, cols, vectorized)))
            .as("%d×%d times %d×%d, Vector API %s", rows, inner, inner, cols, vectorized)
            .containsExactly(longBits(expected));
        assertThat(longBits(OrderedProducts.transposeTimes(aByColumns, inner, rows, b, cols, vectorized)))
            .as("(%d×%d)ᵀ times %d×%d, Vector API %s", inner, rows, inner, cols, vectorized)
            .containsExactly(longBits(expected));
      }
    }
  }

  /** The data tell the orders apart: a float64 sum rounded once differs from the chain somewhere. */
  @Test
  void theChainIsNotTheCorrectlyRoundedSum() {
    SplittableRandom random = new SplittableRandom(13);
    float[] a = cancelling(random, 12 * 64);
    float[] b = cancelling(random, 64 * 74);
    float[] chained = OrderedProducts.times(a, 12, 64, b, 74);
    int differing = 0;
    for (int i = 0; i < 12; i++) {
      for (int j = 0; j < 74; j++) {
        double exact = 0;
        for (int k = 0; k < 64; k++) {
          exact += (double) a[i * 64 + k] * b[k * 74 + j];
        }
        differing += (float) exact == chained[i * 74 + j] ? 0 : 1;
      }
    }
    assertThat(differing).as("entries whose chain differs from the rounded float64 sum").isPositive();
  }

  @Test
  void refusesMismatchedShapes() {
    assertThatThrownBy(() -> OrderedProducts.times(new float[6], 2, 3, new float[5], 2))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("B has 5 values, not 3×2");
  }

  private static boolean[] vectorizedAndNot() {
    return OrderedProducts.VECTOR_API ? new boolean[] {true, false} : new boolean[] {false};
  }

  /** Values spanning several binades, half negative, so that partial sums cancel. */
  private static float[] cancelling(SplittableRandom random, int count) {
    float[] values = new float[count];
    for (int i = 0; i < count; i++) {
      values[i] = (float) ((random.nextDouble() - 0.5) * Math.scalb(1.0, random.nextInt(-6, 7)));
    }
    return values;
  }

  private static double[] cancellingDoubles(SplittableRandom random, int count) {
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = (random.nextDouble() - 0.5) * Math.scalb(1.0, random.nextInt(-20, 21));
    }
    return values;
  }

  private static float[] transpose(float[] values, int rows, int cols) {
    float[] out = new float[values.length];
    for (int i = 0; i < rows; i++) {
      for (int j = 0; j < cols; j++) {
        out[j * rows + i] = values[i * cols + j];
      }
    }
    return out;
  }

  private static int[] bits(float[] values) {
    int[] bits = new int[values.length];
    for (int i = 0; i < values.length; i++) {
      bits[i] = Float.floatToRawIntBits(values[i]);
    }
    return bits;
  }

  private static long[] longBits(double[] values) {
    long[] bits = new long[values.length];
    for (int i = 0; i < values.length; i++) {
      bits[i] = Double.doubleToRawLongBits(values[i]);
    }
    return bits;
  }
}

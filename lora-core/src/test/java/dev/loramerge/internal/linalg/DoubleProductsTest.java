package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import java.math.BigDecimal;
import java.math.MathContext;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The Java float64 products against sums carried exactly in BigDecimal, on both kernels. */
class DoubleProductsTest {
  /** Counts off the 4×4 blocks and lengths off whole vectors and panels, beside the SDXL shapes. */
  private static final int[][] SHAPES = {{1, 1}, {3, 7}, {4, 16}, {6, 37}, {9, 2053}, {64, 130}};

  @Test
  void theSurefireRunHasTheVectorApi() {
    assertThat(DoubleProducts.VECTOR_API).as("tests run with --add-modules jdk.incubator.vector on AVX2 or wider").isTrue();
  }

  @Test
  void gramEntriesAreTheDotProductsOfTheRowsOnBothKernels() {
    SplittableRandom random = new SplittableRandom(3);
    for (int[] shape : SHAPES) {
      int count = shape[0];
      int length = shape[1];
      double[] rows = gaussian(random, count * length);
      double[] gramTrue = DoubleProducts.gram(rows, count, length, true);
      double[] gramFalse = DoubleProducts.gram(rows, count, length, false);
      for (int i = 0; i < count; i++) {
        for (int j = 0; j < count; j++) {
          double magnitude = 0;
          for (int t = 0; t < length; t++) {
            magnitude += Math.abs(rows[i * length + t] * rows[j * length + t]);
          }
          double exact = exactDot(rows, i * length, rows, j * length, 1, length);
          for (double[] gram : new double[][] {gramTrue, gramFalse}) {
            String kernel = gram == gramTrue ? "vector" : "scalar";
            assertThat(gram).hasSize(count * count);
            assertThat(gram[i * count + j])
                .as("entry (%d, %d) of the Gram of %d rows of %d, %s kernel", i, j, count, length, kernel)
                .isCloseTo(exact, within(1e-15 * length * magnitude + Double.MIN_VALUE));
            assertThat(gram[i * count + j]).as("symmetric at (%d, %d), %s kernel", i, j, kernel).isEqualTo(gram[j * count + i]);
          }
        }
      }
    }
  }

  @Test
  void productEntriesAreTheSumsOnBothKernels() {
    SplittableRandom random = new SplittableRandom(4);
    for (int[] shape : SHAPES) {
      int count = shape[0];
      int length = shape[1];
      double[] rows = gaussian(random, count * length);
      for (int k : new int[] {1, 3, 4, 32}) {
        double[] left = gaussian(random, k * count);
        for (boolean vectorized : new boolean[] {true, false}) {
          double[] product = DoubleProducts.product(left, k, rows, count, length, vectorized);
          assertThat(product).hasSize(k * length);
          for (int c = 0; c < k; c++) {
            for (int t = 0; t < length; t++) {
              double magnitude = 0;
              for (int i = 0; i < count; i++) {
                magnitude += Math.abs(left[c * count + i] * rows[i * length + t]);
              }
              assertThat(product[c * length + t])
                  .as("entry (%d, %d) of %d×%d times %d×%d, vectorized %s", c, t, k, count, count, length, vectorized)
                  .isCloseTo(exactDot(left, c * count, rows, t, length, count), within(1e-15 * count * magnitude + Double.MIN_VALUE));
            }
          }
        }
      }
    }
  }

  @Test
  void resultsDoNotDependOnWhichThreadOrHowOftenTheyAreComputed() throws InterruptedException {
    SplittableRandom random = new SplittableRandom(5);
    double[] rows = gaussian(random, 64 * 1283);
    double[] left = gaussian(random, 32 * 64);
    double[] gram = DoubleProducts.gram(rows, 64, 1283);
    double[] product = DoubleProducts.product(left, 32, rows, 64, 1283);
    double[][] again = new double[2][];
    Thread thread = new Thread(() -> {
      again[0] = DoubleProducts.gram(rows, 64, 1283);
      again[1] = DoubleProducts.product(left, 32, rows, 64, 1283);
    });
    thread.start();
    thread.join();
    assertThat(again[0]).as("Gram on another thread").isEqualTo(gram);
    assertThat(again[1]).as("product on another thread").isEqualTo(product);
  }

  @Test
  void mismatchedShapesAreRejected() {
    assertThatThrownBy(() -> DoubleProducts.gram(new double[10], 3, 4))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("10 values are not 3 rows of 4");
    assertThatThrownBy(() -> DoubleProducts.product(new double[6], 2, new double[12], 4, 3))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("6 values are not 2x4");
  }

  /** Σᵢ a[aStart + i]·b[bStart + i·bStride] over {@code count} terms, rounded once to double. */
  private static double exactDot(double[] a, int aStart, double[] b, int bStart, int bStride, int count) {
    BigDecimal sum = BigDecimal.ZERO;
    for (int i = 0; i < count; i++) {
      sum = sum.add(new BigDecimal(a[aStart + i]).multiply(new BigDecimal(b[bStart + i * bStride])));
    }
    return sum.round(MathContext.DECIMAL128).doubleValue();
  }

  private static double[] gaussian(SplittableRandom random, int count) {
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = Randoms.standardNormal(random);
    }
    return values;
  }
}

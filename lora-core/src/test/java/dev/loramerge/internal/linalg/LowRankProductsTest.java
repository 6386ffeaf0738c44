package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class LowRankProductsTest {
  @Test
  void theSurefireRunHasTheVectorApi() {
    assertThat(LowRankProducts.VECTOR_API).as("tests run with --add-modules jdk.incubator.vector on AVX2 or wider").isTrue();
  }

  @Test
  void eachEntryIsTheInOrderFusedSumTimesTheScale() {
    SplittableRandom random = new SplittableRandom(11);
    // Columns cover whole panels of four vectors, single vectors after them, and scalar tails;
    // rows cover odd counts and more than one block of rows.
    int[][] shapes = {
      {1, 1, 1}, {3, 4, 7}, {5, 32, 64}, {7, 32, 80}, {9, 8, 131}, {17, 16, 1280}, {2, 33, 2880}, {131, 32, 200}
    };
    for (int[] shape : shapes) {
      int rows = shape[0];
      int rank = shape[1];
      int columns = shape[2];
      float[] up = gaussian(random, rows * rank);
      float[] down = gaussian(random, rank * columns);
      for (double scale : new double[] {1, 0.5, 0.75, -2.5}) {
        float[] product = LowRankProducts.product(up, down, rank, scale);
        assertThat(product).hasSize(rows * columns);
        for (int row = 0; row < rows; row++) {
          for (int column = 0; column < columns; column++) {
            float sum = 0;
            for (int k = 0; k < rank; k++) {
              sum = Math.fma(up[row * rank + k], down[k * columns + column], sum);
            }
            assertThat(product[row * columns + column])
                .as("entry (%d, %d) of %d×%d×%d, scale %s", row, column, rows, rank, columns, scale)
                .isEqualTo(sum * (float) scale);
          }
        }
      }
    }
  }

  @Test
  void rejectsFactorsOfDifferentRanks() {
    assertThatThrownBy(() -> LowRankProducts.product(new float[6], new float[10], 4, 1))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("factors of 6 and 10 entries do not share a rank of 4");
  }

  private static float[] gaussian(SplittableRandom random, int count) {
    float[] values = new float[count];
    for (int i = 0; i < count; i++) {
      values[i] = (float) (random.nextGaussian());
    }
    return values;
  }
}

package dev.loramerge.internal.select;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class MagnitudeSelectTest {
  @Test
  void kthLargestMagnitudeMatchesSorting() {
    SplittableRandom random = new SplittableRandom(5);
    for (int trial = 0; trial < 200; trial++) {
      int n = 1 + random.nextInt(2000);
      float[] values = new float[n];
      for (int i = 0; i < n; i++) {
        // Few distinct values in some trials, to exercise ties; signs and zeros throughout.
        values[i] = trial % 3 == 0 ? random.nextInt(-3, 4) * 0.5f : (float) (random.nextGaussian() * Math.pow(10, random.nextInt(-6, 3)));
      }
      float[] magnitudes = new float[n];
      for (int i = 0; i < n; i++) {
        magnitudes[i] = Math.abs(values[i]);
      }
      Arrays.sort(magnitudes);
      int k = 1 + random.nextInt(n);
      for (boolean vectorized : new boolean[] {false, true}) {
        assertThat(MagnitudeSelect.kthLargestMagnitude(values, k, vectorized))
            .as("trial %d: %d-th largest of %d, vectorized %s", trial, k, n, vectorized)
            .isEqualTo(magnitudes[n - k]);
      }
    }
  }

  @Test
  void keepLargestKeepsTheFirstOfEqualMagnitudes() {
    float[] values = {0.5f, -3f, 2f, -2f, 1f, 0f, 2f, -0.25f};
    MagnitudeSelect.keepLargest(values, 3);
    assertThat(values).containsExactly(0f, -3f, 2f, -2f, 0f, 0f, 0f, 0f);
  }

  @Test
  void theVectorPassesRunHere() {
    assertThat(MagnitudeSelect.VECTOR_API).as("surefire's argLine adds jdk.incubator.vector; without it one path is tested").isTrue();
  }
}

package dev.loramerge.algorithms.internal;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class TaskTensorsTest {
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
      assertThat(TaskTensors.kthLargestMagnitude(values, k))
          .as("trial %d: %d-th largest of %d", trial, k, n)
          .isEqualTo(magnitudes[n - k]);
    }
  }

  @Test
  void magnitudePruningKeepsExactlyTheDensityAndTheLargest() {
    float[] values = {0.5f, -3f, 2f, -2f, 1f, 0f, 2f, -0.25f};
    TaskTensors.pruneByMagnitude(values, 0.5);
    assertThat(values).containsExactly(0f, -3f, 2f, -2f, 0f, 0f, 2f, 0f);
  }

  @Test
  void twoTensorTotalVoteMatchesTheDefinitionBitForBit() {
    SplittableRandom random = new SplittableRandom(9);
    int n = 20_000;
    float[] first = new float[n];
    float[] second = new float[n];
    for (int i = 0; i < n; i++) {
      // Zeros (both signs), exact cancellations and NaN among Gaussian values.
      int kind = random.nextInt(12);
      first[i] = kind == 0 ? 0f : kind == 1 ? -0f : (float) random.nextGaussian();
      second[i] = kind == 2 ? -first[i] : kind == 3 ? Float.NaN : kind == 4 ? -0f : (float) random.nextGaussian();
    }
    double[] weights = {0.7, 0.3};
    float[] merged = TaskTensors.electAndMerge(new float[][] {first, second}, weights, dev.loramerge.algorithms.MajoritySign.TOTAL);
    for (int i = 0; i < n; i++) {
      // The definition: elect the sign of the summed values, average the weighted agreeing ones.
      double votes = (double) first[i] + second[i];
      float elected = votes >= 0 ? 1f : -1f;
      double total = 0;
      int agreeing = 0;
      if (Math.signum(first[i]) == elected) {
        total += weights[0] * first[i];
        agreeing++;
      }
      if (Math.signum(second[i]) == elected) {
        total += weights[1] * second[i];
        agreeing++;
      }
      float expected = (float) (total / Math.max(1, agreeing));
      assertThat(Float.floatToRawIntBits(merged[i]))
          .as("element %d of (%s, %s): %s, expected %s", i, first[i], second[i], merged[i], expected)
          .isEqualTo(Float.floatToRawIntBits(expected));
    }
  }
}

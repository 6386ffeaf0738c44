package dev.loramerge.merge;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class PostPruneTest {
  @Test
  void densityKeepsTheLargestMagnitudesTheFirstOfEqualOnesBitForBit() {
    SplittableRandom random = new SplittableRandom(17);
    for (int trial = 0; trial < 300; trial++) {
      int n = 1 + random.nextInt(3000);
      float[] values = new float[n];
      for (int i = 0; i < n; i++) {
        // Few distinct values every third trial, so that more entries tie with the threshold than
        // may be kept; signed zeros and infinities throughout.
        int kind = random.nextInt(40);
        values[i] =
            kind == 0 ? Float.NEGATIVE_INFINITY
                : kind == 1 ? Float.POSITIVE_INFINITY
                : kind == 2 ? -0f
                : kind == 3 ? 0f
                : trial % 3 == 0 ? random.nextInt(-3, 4) * 0.5f
                : (float) random.nextGaussian();
      }
      double density = trial % 10 == 0 ? 1.0 / n : random.nextDouble();
      float[] pruned = values.clone();
      PostPrune.density(density).apply(pruned);
      float[] expected = sortedCopyPrune(values, density);
      for (int i = 0; i < n; i++) {
        assertThat(Float.floatToRawIntBits(pruned[i]))
            .as("trial %d, density %s, entry %d: %s, expected %s", trial, density, i, pruned[i], expected[i])
            .isEqualTo(Float.floatToRawIntBits(expected[i]));
      }
    }
  }

  @Test
  void aFactorHoldingNanIsLeftForTheMergeToReport() {
    float[] values = {0.5f, Float.NaN, -2f, 1f};
    PostPrune.density(0.5).apply(values);
    assertThat(values).as("NaN is not pruned away, so the finite check still sees it").containsExactly(0.5f, Float.NaN, -2f, 1f);
  }

  @Test
  void thresholdZeroesEveryEntryBelowIt() {
    float[] values = {0.5f, -1e-5f, 2e-4f, -0f, -3f};
    PostPrune.threshold(1e-4).apply(values);
    assertThat(values).containsExactly(0.5f, 0f, 2e-4f, 0f, -3f);
  }

  /**
   * Keep the ⌊density·n⌋ entries of largest magnitude, by a sorted copy of the magnitudes: the
   * entries above the k-th largest, then those equal to it in order until k are kept; the rest
   * become +0.
   */
  private static float[] sortedCopyPrune(float[] input, double density) {
    float[] values = input.clone();
    int keep = (int) (density * values.length);
    if (keep >= values.length) {
      return values;
    }
    float[] magnitudes = new float[values.length];
    for (int i = 0; i < values.length; i++) {
      magnitudes[i] = Math.abs(values[i]);
    }
    Arrays.sort(magnitudes);
    double limit = keep == 0 ? Double.POSITIVE_INFINITY : magnitudes[values.length - keep];
    int kept = 0;
    for (float value : values) {
      if (Math.abs(value) > limit) {
        kept++;
      }
    }
    int ties = keep - kept;
    for (int i = 0; i < values.length; i++) {
      float magnitude = Math.abs(values[i]);
      if (magnitude == limit && ties > 0) {
        ties--;
      } else if (magnitude <= limit) {
        values[i] = 0;
      }
    }
    return values;
  }
}

package dev.loramerge.algorithms.internal;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.internal.select.MagnitudeSelect;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class TaskTensorsTest {
  @Test
  void magnitudePruningKeepsExactlyTheDensityAndTheLargest() {
    float[] values = {0.5f, -3f, 2f, -2f, 1f, 0f, 2f, -0.25f};
    TaskTensors.pruneByMagnitude(values, 0.5);
    assertThat(values).containsExactly(0f, -3f, 2f, -2f, 0f, 0f, 2f, 0f);
  }

  @Test
  void magnitudePruningMatchesTheDefinitionBitForBit() {
    SplittableRandom random = new SplittableRandom(21);
    for (int trial = 0; trial < 300; trial++) {
      int n = 1 + random.nextInt(3000);
      float[] values = new float[n];
      for (int i = 0; i < n; i++) {
        // Every third trial has few distinct values, so more entries tie with the threshold than
        // may be kept; NaN, infinities and signed zeros in odd trials, only finite values (counted
        // from the selection's histograms) in even ones.
        int kind = trial % 2 == 0 ? 2 + random.nextInt(38) : random.nextInt(40);
        values[i] =
            kind == 0 ? Float.NaN
                : kind == 1 ? Float.NEGATIVE_INFINITY
                : kind == 2 ? -0f
                : kind == 3 ? 0f
                : trial % 3 == 0 ? random.nextInt(-3, 4) * 0.5f
                : (float) random.nextGaussian();
      }
      double density = random.nextDouble();
      float[] expected = prunedByDefinition(values, density);
      float[] pruned = values.clone();
      TaskTensors.pruneByMagnitude(pruned, density);
      assertBitsEqual(pruned, expected, String.format("trial %d, density %s, %d entries", trial, density, n));
      // The cut applied after magnitudeCut, whose ties and vector searches run on either path.
      for (boolean vectorized : new boolean[] {false, true}) {
        float[] cutHere = values.clone();
        int cutBits = Float.floatToRawIntBits(MagnitudeSelect.magnitudeCut(cutHere, (int) (density * n), vectorized));
        for (int i = 0; i < n; i++) {
          int bits = Float.floatToRawIntBits(cutHere[i]);
          boolean below = (bits & 0x7FFFFFFF) < cutBits;
          cutHere[i] = below ? 0f : cutHere[i];
        }
        assertBitsEqual(cutHere, expected, String.format("cut, vectorized %s, trial %d, density %s, %d entries", vectorized, trial, density, n));
      }
    }
  }

  @Test
  void combiningWithMagnitudeCutsEqualsPruningFirst() {
    SplittableRandom random = new SplittableRandom(33);
    for (int trial = 0; trial < 120; trial++) {
      int n = 1 + random.nextInt(3000);
      int count = 2 + trial % 2;
      float[][] tensors = new float[count][n];
      for (float[] tensor : tensors) {
        for (int i = 0; i < n; i++) {
          // As in the pruning test: ties with the threshold every third trial, non-finite values
          // (pruned in place, cut 0) every fifth.
          int kind = trial % 5 == 0 ? random.nextInt(40) : 2 + random.nextInt(38);
          tensor[i] =
              kind == 0 ? Float.NaN
                  : kind == 1 ? Float.POSITIVE_INFINITY
                  : kind == 2 ? -0f
                  : trial % 3 == 0 ? random.nextInt(-3, 4) * 0.5f
                  : (float) random.nextGaussian();
        }
      }
      double density = trial % 7 == 0 ? 1 : random.nextDouble();
      double[] weights = random.doubles(count, -1, 2).toArray();
      float[][] pruned = new float[count][];
      float[][] uncut = new float[count][];
      float[] cuts = new float[count];
      for (int t = 0; t < count; t++) {
        pruned[t] = tensors[t].clone();
        TaskTensors.pruneByMagnitude(pruned[t], density);
        uncut[t] = tensors[t].clone();
        cuts[t] = TaskTensors.magnitudeCut(uncut[t], density);
      }
      String context = String.format("trial %d: %d tensors of %d, density %s, cuts %s", trial, count, n, density, Arrays.toString(cuts));
      assertBitsEqual(
          TaskTensors.electAndMerge(copies(uncut), weights, dev.loramerge.algorithms.MajoritySign.TOTAL, cuts),
          TaskTensors.electAndMerge(copies(pruned), weights, dev.loramerge.algorithms.MajoritySign.TOTAL),
          "TIES, " + context);
      assertBitsEqual(
          TaskTensors.electAndMerge(copies(uncut), weights, dev.loramerge.algorithms.MajoritySign.FREQUENCY, cuts),
          TaskTensors.electAndMerge(copies(pruned), weights, dev.loramerge.algorithms.MajoritySign.FREQUENCY),
          "TIES by frequency, " + context);
      assertBitsEqual(TaskTensors.weightedSum(uncut, weights, cuts), TaskTensors.weightedSum(pruned, weights), "sum, " + context);
      if (count == 2) {
        assertBitsEqual(
            TaskTensors.electAndMergeTwo(uncut[0], uncut[1], weights[0], weights[1], cuts[0], cuts[1], false),
            TaskTensors.electAndMerge(copies(pruned), weights, dev.loramerge.algorithms.MajoritySign.TOTAL),
            "scalar TIES, " + context);
      }
    }
  }

  private static float[][] copies(float[][] tensors) {
    return Arrays.stream(tensors).map(float[]::clone).toArray(float[][]::new);
  }

  private static void assertBitsEqual(float[] actual, float[] expected, String context) {
    assertThat(actual).as(context).hasSameSizeAs(expected);
    for (int i = 0; i < expected.length; i++) {
      assertThat(Float.floatToRawIntBits(actual[i]))
          .as("%s: entry %d is %s, expected %s", context, i, actual[i], expected[i])
          .isEqualTo(Float.floatToRawIntBits(expected[i]));
    }
  }

  /**
   * Keep the ⌊density·n⌋ largest |x| (the threshold is the k-th largest by sorting, NaN above
   * infinity as in the radix select); entries equal to it are kept first come first served; NaN
   * compares false, so it is never kept; everything else becomes +0.
   */
  private static float[] prunedByDefinition(float[] values, double density) {
    int keep = (int) (density * values.length);
    float[] result = values.clone();
    if (keep >= values.length) {
      return result;
    }
    if (keep == 0) {
      Arrays.fill(result, 0f);
      return result;
    }
    int[] magnitudes = new int[values.length];
    for (int i = 0; i < values.length; i++) {
      magnitudes[i] = Float.floatToRawIntBits(values[i]) & 0x7FFFFFFF;
    }
    Arrays.sort(magnitudes);
    float threshold = Float.intBitsToFloat(magnitudes[values.length - keep]);
    int above = 0;
    for (float value : values) {
      above += Math.abs(value) > threshold ? 1 : 0;
    }
    int tiesLeft = keep - above;
    for (int i = 0; i < values.length; i++) {
      float magnitude = Math.abs(values[i]);
      boolean kept = magnitude > threshold || (magnitude == threshold && tiesLeft-- > 0);
      if (!kept) {
        result[i] = 0f;
      }
    }
    return result;
  }

  @Test
  void randomPruningDrawsTheSplittableRandomStreamOnBothPaths() {
    assertThat(TaskTensors.SPLITMIX_STREAMS).as("this JDK's SplittableRandom is SplitMix64, so the vector mask runs").isTrue();
    SplittableRandom values = new SplittableRandom(12);
    // Lengths off whole vectors; densities with thresholds that are not powers of two.
    for (int length : new int[] {1, 7, 8, 9, 4099}) {
      for (double density : new double[] {0.5, 0.3, 0.9}) {
        long streamSeed = 0x1234_5678_9abcL * length;
        float[] tensor = new float[length];
        for (int i = 0; i < length; i++) {
          int kind = values.nextInt(10);
          tensor[i] = kind == 0 ? -0f : kind == 1 ? Float.NaN : kind == 2 ? Float.NEGATIVE_INFINITY : (float) values.nextGaussian();
        }
        float[] expected = new float[length];
        SplittableRandom draws = new SplittableRandom(streamSeed);
        for (int i = 0; i < length; i++) {
          expected[i] = draws.nextDouble() < density ? (float) (tensor[i] / density) : 0f;
        }
        for (boolean vectorized : new boolean[] {true, false}) {
          float[] pruned = tensor.clone();
          TaskTensors.pruneRandomly(pruned, density, streamSeed, vectorized);
          for (int i = 0; i < length; i++) {
            assertThat(Float.floatToRawIntBits(pruned[i]))
                .as("entry %d of %d (%s) at density %s, vectorized %s: %s", i, length, tensor[i], density, vectorized, pruned[i])
                .isEqualTo(Float.floatToRawIntBits(expected[i]));
          }
        }
      }
    }
  }

  @Test
  void twoTensorWeightedSumMatchesTheDefinitionBitForBitOnBothPaths() {
    SplittableRandom random = new SplittableRandom(10);
    int n = 20_003;
    float[] first = new float[n];
    float[] second = new float[n];
    for (int i = 0; i < n; i++) {
      // Zeros of both signs, exact cancellations, infinities and NaN among Gaussian values, some
      // at the cut exactly.
      int kind = random.nextInt(12);
      first[i] = kind == 0 ? -0f : kind == 1 ? Float.NEGATIVE_INFINITY : kind == 2 ? Float.NaN : kind == 3 ? -0.25f : (float) random.nextGaussian();
      second[i] = kind == 4 ? -first[i] : kind == 5 ? -0f : kind == 6 ? Float.intBitsToFloat(0xffc00000) : kind == 7 ? 0.5f : (float) random.nextGaussian();
    }
    assertThat(TaskTensors.VECTOR_API).as("surefire's argLine adds jdk.incubator.vector; without it one path is tested").isTrue();
    for (float[] cuts : new float[][] {{0f, 0f}, {0.25f, 0.5f}}) {
      for (double[] weights : new double[][] {{0.7, 0.3}, {-1.25, 0.5}}) {
        for (boolean vectorized : new boolean[] {true, false}) {
          float[] sum = TaskTensors.weightedSum(new float[][] {first.clone(), second.clone()}, weights, cuts, vectorized);
          for (int i = 0; i < n; i++) {
            // The definition: entries below their tensor's cut count as +0; 0 + w₁x + w₂y in float64.
            double x = Math.abs(first[i]) < cuts[0] ? 0.0 : first[i];
            double y = Math.abs(second[i]) < cuts[1] ? 0.0 : second[i];
            float expected = (float) (0.0 + weights[0] * x + weights[1] * y);
            assertThat(Float.floatToRawIntBits(sum[i]))
                .as("element %d of (%s, %s), cuts %s, weights %s, vectorized %s: %s",
                    i, first[i], second[i], Arrays.toString(cuts), Arrays.toString(weights), vectorized, sum[i])
                .isEqualTo(Float.floatToRawIntBits(expected));
          }
        }
      }
    }
  }

  @Test
  void twoTensorTotalVoteMatchesTheDefinitionBitForBit() {
    SplittableRandom random = new SplittableRandom(9);
    int n = 20_003;
    float[] first = new float[n];
    float[] second = new float[n];
    for (int i = 0; i < n; i++) {
      // Zeros (both signs), exact cancellations, infinities and NaN (both signs) among Gaussian values.
      int kind = random.nextInt(14);
      first[i] = kind == 0 ? 0f : kind == 1 ? -0f : kind == 5 ? Float.NEGATIVE_INFINITY : kind == 6 ? Float.intBitsToFloat(0xffc00000) : (float) random.nextGaussian();
      second[i] = kind == 2 ? -first[i] : kind == 3 ? Float.NaN : kind == 4 ? -0f : kind == 7 ? Float.POSITIVE_INFINITY : (float) random.nextGaussian();
    }
    double[] weights = {0.7, 0.3};
    assertThat(TaskTensors.VECTOR_API).as("surefire's argLine adds jdk.incubator.vector; without it one path is tested").isTrue();
    float[] merged = TaskTensors.electAndMerge(new float[][] {first, second}, weights, dev.loramerge.algorithms.MajoritySign.TOTAL);
    float[] scalar = TaskTensors.electAndMergeTwo(first, second, weights[0], weights[1], 0f, 0f, false);
    for (int i = 0; i < n; i++) {
      assertThat(Float.floatToRawIntBits(scalar[i]))
          .as("element %d of (%s, %s), scalar %s, vectorized %s", i, first[i], second[i], scalar[i], merged[i])
          .isEqualTo(Float.floatToRawIntBits(merged[i]));
    }
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

  @Test
  void breadcrumbsKeepTheRanksBetweenTheOutliersAndTheDensityWithTiesInOrder() {
    SplittableRandom random = new SplittableRandom(9);
    for (int trial = 0; trial < 300; trial++) {
      float[] values = randomWithTies(random, trial);
      double density = random.nextInt(0, 11) / 10.0;
      double gamma = random.nextInt(0, 6) / 20.0;
      float[] expected = values.clone();
      Integer[] descending = byMagnitude(values, false);
      int keep = (int) (density * values.length);
      int top = Math.min((int) (gamma * values.length), values.length - keep);
      for (int rank = 0; rank < values.length; rank++) {
        if (rank < top || rank >= top + keep) {
          expected[descending[rank]] = 0;
        }
      }
      float[] pruned = values.clone();
      TaskTensors.pruneBreadcrumbs(pruned, density, gamma);
      assertThat(pruned).as("trial %d: %d entries, density %s, gamma %s", trial, values.length, density, gamma).containsExactly(expected);
    }
  }

  @Test
  void dellaDrawsInRankOrderWithTiesInOrder() {
    SplittableRandom random = new SplittableRandom(10);
    for (int trial = 0; trial < 200; trial++) {
      float[] values = randomWithTies(random, trial);
      int rowLength = 1 + random.nextInt(values.length);
      long seed = random.nextLong();
      float[] expected = values.clone();
      SplittableRandom draws = new SplittableRandom(seed);
      for (int start = 0; start < values.length; start += rowLength) {
        int length = Math.min(rowLength, values.length - start);
        Integer[] ascending = byMagnitude(Arrays.copyOfRange(values, start, start + length), true);
        for (int rank = 0; rank < length; rank++) {
          double p = length == 1 ? 0.5 : 0.5 - 0.2 + 0.4 * rank / (double) (length - 1);
          int index = start + ascending[rank];
          expected[index] = draws.nextDouble() < p ? (float) (values[index] / p) : 0f;
        }
      }
      float[] pruned = values.clone();
      TaskTensors.pruneDella(pruned, rowLength, 0.5, 0.2, new SplittableRandom(seed));
      assertThat(pruned).as("trial %d: %d entries in rows of %d", trial, values.length, rowLength).containsExactly(expected);
    }
  }

  /** Gaussian values, or in every other trial a few repeated ones of both signs and zeros. */
  private static float[] randomWithTies(SplittableRandom random, int trial) {
    float[] values = new float[1 + random.nextInt(500)];
    for (int i = 0; i < values.length; i++) {
      values[i] = trial % 2 == 0 ? random.nextInt(-3, 4) * 0.5f : (float) random.nextGaussian();
    }
    return values;
  }

  /** Indices by magnitude (ascending or descending), equal magnitudes by index ascending. */
  private static Integer[] byMagnitude(float[] values, boolean ascending) {
    Integer[] order = new Integer[values.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    Arrays.sort(order, (a, b) -> {
      int byMagnitude = Float.compare(Math.abs(values[a]), Math.abs(values[b]));
      return byMagnitude != 0 ? (ascending ? byMagnitude : -byMagnitude) : Integer.compare(a, b);
    });
    return order;
  }
}

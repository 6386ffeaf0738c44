package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.testing.GoldenFiles;
import java.io.IOException;
import org.junit.jupiter.api.Test;

/**
 * The golden set's DARE cases are random, so they are checked by structure (see the golden
 * README): on the same inputs and weights, every element of our merged factors must be
 * explained by some keep pattern, and each input must be kept in about {@code density} of them.
 */
class DareGoldenTest {
  private static final double DENSITY = 0.5;

  /** v_i = √(w_i·s_i) for style (w 1, s 2) and subject (w 0.6, s 1), the cases' adapters. */
  private static final double[] V = {Math.sqrt(2.0), Math.sqrt(0.6)};

  private static LoraAdapter[] inputs() throws IOException {
    return new LoraAdapter[] {
      LoraFiles.read(GoldenFiles.peft021("adapters/style")), LoraFiles.read(GoldenFiles.peft021("adapters/subject"))
    };
  }

  private static LoraAdapter merge(MergeAlgorithm method, LoraAdapter[] inputs) {
    return LoraMerger.builder().algorithm(method).add(inputs[0], 1.0).add(inputs[1], 0.6).merge();
  }

  @Test
  void dareLinearAbIsASumOfKeptAndRescaledEntries() throws IOException {
    LoraAdapter[] inputs = inputs();
    LoraAdapter merged = merge(DareLinear.of(DENSITY).withSeed(11), inputs);
    long[] kept = new long[2];
    long elements = 0;
    for (ModuleKey key : merged.modules().keySet()) {
      for (boolean down : new boolean[] {true, false}) {
        double[] result = factor(merged, key, down);
        double[][] sources = {factor(inputs[0], key, down), factor(inputs[1], key, down)};
        for (int e = 0; e < result.length; e++) {
          int pattern = explainingPattern(result[e], sources, e, false);
          assertThat(pattern).as("%s %s element %d: Σ vᵢ·keepᵢ·xᵢ/d for some keep pattern", key, down ? "A" : "B", e).isNotNegative();
          kept[0] += pattern & 1;
          kept[1] += (pattern >> 1) & 1;
          elements++;
        }
      }
    }
    for (int i = 0; i < 2; i++) {
      assertThat((double) kept[i] / elements).as("share of input %d kept", i).isBetween(DENSITY - 0.02, DENSITY + 0.02);
    }
  }

  @Test
  void dareTiesAbIsADisjointMeanOfKeptEntries() throws IOException {
    LoraAdapter[] inputs = inputs();
    LoraAdapter merged = merge(DareTies.of(DENSITY).withSeed(11), inputs);
    for (ModuleKey key : merged.modules().keySet()) {
      for (boolean down : new boolean[] {true, false}) {
        double[] result = factor(merged, key, down);
        double[][] sources = {factor(inputs[0], key, down), factor(inputs[1], key, down)};
        for (int e = 0; e < result.length; e++) {
          assertThat(explainingPattern(result[e], sources, e, true))
              .as("%s %s element %d: a disjoint mean of kept entries", key, down ? "A" : "B", e)
              .isNotNegative();
        }
      }
    }
  }

  private static double[] factor(LoraAdapter adapter, ModuleKey key, boolean down) {
    return (down ? adapter.modules().get(key).down() : adapter.modules().get(key).up()).toDoubleArray();
  }

  /** The keep pattern (bit i: input i kept) that gives {@code value}, or -1. */
  private static int explainingPattern(double value, double[][] sources, int element, boolean disjointMean) {
    for (int pattern = 0; pattern < 4; pattern++) {
      double sum = 0;
      int count = 0;
      for (int i = 0; i < 2; i++) {
        if ((pattern & (1 << i)) != 0) {
          sum += V[i] * sources[i][element] / DENSITY;
          count++;
        }
      }
      double[] candidates =
          disjointMean
              ? new double[] {sum / Math.max(1, count), pattern == 3 ? V[0] * sources[0][element] / DENSITY : sum,
                  pattern == 3 ? V[1] * sources[1][element] / DENSITY : sum}
              : new double[] {sum};
      for (double candidate : candidates) {
        if (Math.abs(candidate - value) <= 1e-5 * (1 + Math.abs(candidate))) {
          return pattern;
        }
      }
    }
    return -1;
  }
}

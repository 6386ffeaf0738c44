package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.TinyLora;
import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/**
 * DELLA against an independent float64 reading of its definition (Deep et al. 2024, §3; mergekit's
 * {@code della}): in each row of each update sᵢ·BᵢAᵢ, the entry of magnitude rank r (0 the
 * smallest, of L) is kept with probability pᵣ = density − ε + 2ε·r/(L − 1) and then divided by pᵣ;
 * the pruned updates are combined by TIES (sign elected from their sum, the weighted entries that
 * agree with it averaged). At full rank the re-rank is lossless, so every merged entry can be
 * checked: it must be what some keep pattern gives.
 */
class DellaTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 2, 2, 2);
  private static final double DENSITY = 0.5;
  private static final double EPSILON = 0.15;
  private static final int FULL_RANK = 12;

  @Test
  void oneAdapterKeepsEachEntryWithItsRanksProbabilityAndRescales() {
    double weight = 0.8;
    long kept = 0;
    long entries = 0;
    long[] keptByHalf = new long[2];
    long[] entriesByHalf = new long[2];
    for (long seed = 1; seed <= 8; seed++) {
      LoraAdapter merged =
          LoraMerger.builder().algorithm(Della.of(DENSITY).withEpsilon(EPSILON).withSeed(seed)).add(STYLE, weight).rank(FULL_RANK).exactSvd(true).merge();
      for (ModuleKey key : TinyLora.KEYS) {
        LoraModule module = STYLE.modules().get(key);
        double[] delta = module.deltaF64();
        double[] probability = keepProbabilities(delta, rowLength(module));
        double[] got = merged.modules().get(key).deltaF64();
        double tolerance = 1e-5 * maxAbs(delta) / DENSITY;
        for (int e = 0; e < delta.length; e++) {
          boolean keep = Math.abs(got[e]) > tolerance;
          double expected = keep ? weight * delta[e] / probability[e] : 0;
          assertThat(got[e]).as("%s entry %d (seed %d): 0 or w·x/p", key, e, seed).isCloseTo(expected, org.assertj.core.data.Offset.offset(tolerance));
          int half = probability[e] >= DENSITY ? 1 : 0;
          keptByHalf[half] += keep ? 1 : 0;
          entriesByHalf[half]++;
          kept += keep ? 1 : 0;
          entries++;
        }
      }
    }
    assertThat((double) kept / entries).as("share kept of %d entries", entries).isBetween(DENSITY - 0.04, DENSITY + 0.04);
    double rise = (double) keptByHalf[1] / entriesByHalf[1] - (double) keptByHalf[0] / entriesByHalf[0];
    assertThat(rise).as("the larger half's keep rate above the smaller half's, about ε").isBetween(EPSILON - 0.07, EPSILON + 0.07);
  }

  @Test
  void twoAdaptersGiveTheTiesMeanOfSomeKeepPatternInEveryEntry() {
    double[] weights = {0.7, 0.5};
    LoraAdapter merged =
        LoraMerger.builder().algorithm(Della.of(DENSITY).withEpsilon(EPSILON).withSeed(3)).add(STYLE, weights[0]).add(SUBJECT, weights[1]).rank(FULL_RANK).exactSvd(true).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      double[][] deltas = {STYLE.modules().get(key).deltaF64(), SUBJECT.modules().get(key).deltaF64()};
      int row = rowLength(STYLE.modules().get(key));
      double[][] probabilities = {keepProbabilities(deltas[0], row), keepProbabilities(deltas[1], row)};
      double[] got = merged.modules().get(key).deltaF64();
      double tolerance = 1e-5 * Math.max(maxAbs(deltas[0]), maxAbs(deltas[1])) / DENSITY;
      for (int e = 0; e < got.length; e++) {
        boolean explained = false;
        for (int pattern = 0; pattern < 4 && !explained; pattern++) {
          double[] pruned = new double[2];
          for (int i = 0; i < 2; i++) {
            pruned[i] = ((pattern >> i) & 1) == 1 ? deltas[i][e] / probabilities[i][e] : 0;
          }
          explained = Math.abs(got[e] - tiesMean(pruned, weights)) <= tolerance;
        }
        assertThat(explained).as("%s entry %d = %s is the TIES mean of some keep pattern", key, e, got[e]).isTrue();
      }
    }
  }

  /** PEFT's TIES on one entry: the sign of the unweighted sum (≥ 0 is +), the mean of the weighted entries of that sign. */
  private static double tiesMean(double[] pruned, double[] weights) {
    double sign = pruned[0] + pruned[1] >= 0 ? 1 : -1;
    double sum = 0;
    int count = 0;
    for (int i = 0; i < pruned.length; i++) {
      if (Math.signum(pruned[i]) == sign) {
        sum += weights[i] * pruned[i];
        count++;
      }
    }
    return sum / Math.max(1, count);
  }

  private static int rowLength(LoraModule module) {
    return Math.toIntExact(module.down().numel() / module.rank());
  }

  /** Each entry's keep probability from its magnitude rank within its row, ties by position. */
  private static double[] keepProbabilities(double[] delta, int rowLength) {
    double[] probability = new double[delta.length];
    for (int start = 0; start < delta.length; start += rowLength) {
      int offset = start;
      Integer[] ascending = IntStream.range(0, rowLength).boxed().toArray(Integer[]::new);
      Arrays.sort(ascending, Comparator.comparingDouble((Integer c) -> Math.abs(delta[offset + c])).thenComparingInt(c -> c));
      for (int rank = 0; rank < rowLength; rank++) {
        double p = DENSITY - EPSILON + 2 * EPSILON * rank / (rowLength - 1);
        probability[start + ascending[rank]] = Math.min(1, Math.max(0, p));
      }
    }
    return probability;
  }

  private static double maxAbs(double[] values) {
    return Arrays.stream(values).map(Math::abs).max().orElse(0);
  }
}

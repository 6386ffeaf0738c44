package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.testing.TinyLora;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Invariants every method must keep, on small seeded adapters. */
class MergePropertiesTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 4, 2, 2);
  private static final LoraAdapter DETAIL = TinyLora.adapter("detail", 3, 3, 3);

  private static LoraAdapter merge(MergeAlgorithm method, Object... adaptersAndWeights) {
    LoraMerger.Builder merger = LoraMerger.builder().algorithm(method);
    for (int i = 0; i < adaptersAndWeights.length; i += 2) {
      merger.add((LoraAdapter) adaptersAndWeights[i], (Double) adaptersAndWeights[i + 1]);
    }
    return merger.merge();
  }

  private static void assertSameUpdates(LoraAdapter actual, LoraAdapter expected, double tolerance) {
    for (ModuleKey key : TinyLora.KEYS) {
      assertThat(TinyLora.relativeError(actual.modules().get(key).deltaF64(), expected.modules().get(key).deltaF64()))
          .as("relative error of %s", key)
          .isLessThan(tolerance);
    }
  }

  @Test
  void dareAtDensityOneIsLinear() {
    assertSameUpdates(
        merge(DareLinear.of(1).withSeed(5), STYLE, 0.7, SUBJECT, 0.4), merge(Linear.of(), STYLE, 0.7, SUBJECT, 0.4), 1e-6);
  }

  @Test
  void tiesWithOneAdapterAtDensityOneIsTheIdentity() {
    LoraAdapter merged = merge(Ties.of(1), STYLE, 1.0);
    for (ModuleKey key : TinyLora.KEYS) {
      assertThat(TinyLora.relativeError(merged.modules().get(key).deltaF64(), STYLE.modules().get(key).deltaF64()))
          .as("%s", key)
          .isLessThan(1e-6);
    }
  }

  @Test
  void svdWithRankAtLeastTheSumOfRanksIsCat() {
    LoraAdapter svd = LoraMerger.builder().algorithm(Svd.of()).add(STYLE, 0.5).add(DETAIL, -0.8).rank(7).merge();
    assertSameUpdates(svd, merge(Cat.of(), STYLE, 0.5, DETAIL, -0.8), 1e-5);
  }

  @Test
  void negativeWeightsKeepTheirSign() {
    for (MergeAlgorithm method : List.of(Cat.of(), Linear.of(), Svd.of())) {
      LoraAdapter negative = LoraMerger.builder().algorithm(method).add(STYLE, -0.6).rank(4).merge();
      for (ModuleKey key : TinyLora.KEYS) {
        double[] expected = TinyLora.weightedSum(key, new LoraAdapter[] {STYLE}, new double[] {-0.6});
        assertThat(TinyLora.relativeError(negative.modules().get(key).deltaF64(), expected))
            .as("%s with weight -0.6 on %s", method, key)
            .isLessThan(1e-5);
      }
    }
  }

  @Test
  void factorMethodsRejectNegativeWeightsInsteadOfSquaringThem() {
    assertThatThrownBy(() -> merge(Ties.of(0.5), STYLE, -1.0, SUBJECT, 1.0))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "ties weighs each factor by √(w·s), but module 'unet.down_blocks.0.attentions.0.proj_in' has w·s = -2.0"
                + " in input 0; use a positive weight, cat, or an *_svd method");
  }

  @Test
  void equalRankMethodsNameTheModulesAndRanks() {
    assertThatThrownBy(() -> merge(Ties.of(0.5), STYLE, 1.0, DETAIL, 1.0))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "ties needs equal ranks, but module 'unet.down_blocks.0.attentions.0.proj_in' has ranks [4, 3] in adapters"
                + " 'style', 'detail'; use cat or an *_svd method");
  }

  @Test
  void theSameSeedGivesTheSameBytesOnOneAndTwoThreads() {
    for (MergeAlgorithm method : List.of(DareTies.of(0.4).withSeed(9), DareLinear.of(0.5).withSeed(9).onUpdates(), Della.of(0.5).withSeed(9))) {
      LoraAdapter one = LoraMerger.builder().algorithm(method).add(STYLE, 0.7).add(SUBJECT, 0.5).threads(1).merge();
      LoraAdapter two = LoraMerger.builder().algorithm(method).add(STYLE, 0.7).add(SUBJECT, 0.5).threads(2).merge();
      assertThat(two).as("%s", method).isEqualTo(one);
    }
    LoraAdapter otherSeed =
        LoraMerger.builder().algorithm(DareTies.of(0.4).withSeed(10)).add(STYLE, 0.7).add(SUBJECT, 0.5).merge();
    LoraAdapter seedNine =
        LoraMerger.builder().algorithm(DareTies.of(0.4).withSeed(9)).add(STYLE, 0.7).add(SUBJECT, 0.5).merge();
    assertThat(otherSeed).as("another seed draws other masks").isNotEqualTo(seedNine);
  }

  @Test
  void dareNamesTheDropRateAndPeftNamesTheDensity() {
    assertThat(Dare.of(0.3)).isEqualTo(DareLinear.of(0.7));
    assertThat(Dare.of(0.3).toString()).isEqualTo("DareLinear{density=0.7, dropRate=0.3, seed=0, space=factors}");
    assertThat(Dare.ties(0.3).withSeed(4)).isEqualTo(DareTies.of(0.7).withSeed(4));
    assertThat(Dare.ties(0.3).withSeed(4).toString())
        .isEqualTo("DareTies{density=0.7, dropRate=0.3, majoritySign=total, seed=4, space=factors}");
    LoraAdapter viaDropRate = merge(Dare.of(0.3).withSeed(2), STYLE, 0.7, SUBJECT, 0.5);
    LoraAdapter viaDensity = merge(DareLinear.of(0.7).withSeed(2), STYLE, 0.7, SUBJECT, 0.5);
    assertThat(viaDropRate).isEqualTo(viaDensity);
  }

  @Test
  void dareLinearKeepsEachEntryWithTheDensityAndRescales() {
    double density = 0.6;
    LoraAdapter merged = merge(DareLinear.of(density).withSeed(3), STYLE, 0.7, SUBJECT, 0.5);
    LoraAdapter[] inputs = {STYLE, SUBJECT};
    double[] weights = {Math.sqrt(0.7 * 2), Math.sqrt(0.5 * 0.5)};
    int kept = 0;
    int total = 0;
    for (ModuleKey key : TinyLora.KEYS) {
      double[] merged0 = merged.modules().get(key).down().toDoubleArray();
      double[][] downs = {STYLE.modules().get(key).down().toDoubleArray(), SUBJECT.modules().get(key).down().toDoubleArray()};
      for (int e = 0; e < merged0.length; e++) {
        boolean explained = false;
        for (int pattern = 0; pattern < 4 && !explained; pattern++) {
          double expected = 0;
          for (int i = 0; i < inputs.length; i++) {
            if ((pattern & (1 << i)) != 0) {
              expected += weights[i] * downs[i][e] / density;
            }
          }
          explained = Math.abs(expected - merged0[e]) <= 1e-5 * (1 + Math.abs(expected));
          if (explained) {
            kept += Integer.bitCount(pattern);
          }
        }
        assertThat(explained).as("element %d of %s is Σ vᵢ·keepᵢ·xᵢ/density for some keep pattern", e, key).isTrue();
        total += inputs.length;
      }
    }
    assertThat((double) kept / total).as("share of entries kept").isBetween(density - 0.08, density + 0.08);
  }

  @Test
  void addDifferenceIsExact() {
    LoraAdapter merged =
        LoraMerger.builder().algorithm(AddDifference.of(0.5)).add(STYLE, 1).add(SUBJECT, 1).add(DETAIL, 1).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      double[] expected =
          TinyLora.weightedSum(key, new LoraAdapter[] {STYLE, SUBJECT, DETAIL}, new double[] {1, 0.5, -0.5});
      assertThat(TinyLora.relativeError(merged.modules().get(key).deltaF64(), expected)).as("%s", key).isLessThan(1e-6);
    }
  }

  @Test
  void algorithmsNameEveryParameter() {
    assertThat(Ties.of(0.5).withMajoritySign(MajoritySign.FREQUENCY).toString())
        .isEqualTo("Ties{density=0.5, majoritySign=frequency, space=factors}");
    assertThat(Breadcrumbs.of(0.8).toString()).isEqualTo("Breadcrumbs{density=0.8, gamma=0.01}");
    assertThat(Della.of(0.5).withSeed(3).toString())
        .isEqualTo("Della{density=0.5, epsilon=0.15, majoritySign=total, seed=3}");
    assertThat(MagnitudePrune.of(0.25).onUpdates().parameters()).containsEntry("density", 0.25);
    assertThat(MergeMethod.TIES_SVD.create(java.util.OptionalDouble.of(0.5), MajoritySign.TOTAL, 0))
        .isEqualTo(Ties.of(0.5).onUpdates());
  }

  @Test
  void modulesOnlySomeAdaptersHaveAreMergedFromThose() {
    LoraAdapter partial = STYLE.toBuilder().name("partial").remove(TinyLora.KEYS[0]).build();
    LoraAdapter merged = merge(Cat.of(), partial, 1.0, SUBJECT, 1.0);
    LoraModule onlySubject = merged.modules().get(TinyLora.KEYS[0]);
    assertThat(onlySubject.rank()).isEqualTo(4);
    assertThat(TinyLora.relativeError(onlySubject.deltaF64(), SUBJECT.modules().get(TinyLora.KEYS[0]).deltaF64()))
        .isLessThan(1e-6);
  }
}

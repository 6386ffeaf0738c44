package dev.loramerge.merge;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.merge.MergeAlgorithm.Requirements;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.testing.TinyLora;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The stored terms a device forms a fuse's factors from, and when there are none. */
class ModuleUpdatesTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 2, 1, 2);

  /** The float64 factors rebuilt from the terms as the device does: each B widened, times its coefficient; the A's stacked. */
  @Test
  void termsAreTheCatsFactorsAsStored() {
    ModuleUpdates updates = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, -0.5).build().updates();
    for (ModuleKey key : TinyLora.KEYS) {
      List<ModuleUpdates.Term> terms = updates.terms(key).orElseThrow();
      Float64Factors factors = updates.factors(key);
      int rank = terms.stream().mapToInt(ModuleUpdates.Term::rank).sum();
      int rows = factors.up().length / rank;
      double[] up = new double[factors.up().length];
      double[] down = new double[factors.down().length];
      int column = 0;
      int downAt = 0;
      for (ModuleUpdates.Term term : terms) {
        double[] stored = term.up().toDoubleArray();
        for (int row = 0; row < rows; row++) {
          for (int l = 0; l < term.rank(); l++) {
            up[row * rank + column + l] = stored[row * term.rank() + l] * term.coefficient();
          }
        }
        double[] storedDown = term.down().toDoubleArray();
        System.arraycopy(storedDown, 0, down, downAt, storedDown.length);
        downAt += storedDown.length;
        column += term.rank();
      }
      assertThat(terms).as("%s: one term per adapter", key).hasSize(2);
      assertThat(factors.rank()).as("%s: rank", key).isEqualTo(rank);
      assertThat(up).as("%s: up from the terms", key).containsExactly(factors.up());
      assertThat(down).as("%s: down from the terms", key).containsExactly(factors.down());
    }
  }

  @Test
  void noTermsWhereTheUpdateIsNotThePlainSum() {
    ModuleKey key = TinyLora.KEYS[0];
    assertThat(LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).rank(3).build().updates().terms(key))
        .as("re-ranked below the ranks' sum").isEmpty();
    assertThat(LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).rank(6).build().updates().terms(key))
        .as("an explicit rank the sum fits").isPresent();
    assertThat(LoraMerger.builder().add(STYLE, 0.7).prune(PostPrune.density(0.5)).build().updates().terms(key))
        .as("pruned").isEmpty();
    assertThat(LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).algorithm(new CatLookalike()).build().updates().terms(key))
        .as("another method, even one that gives the cat's factors").isEmpty();
  }

  private static final class CatLookalike implements MergeAlgorithm {
    @Override
    public String name() {
      return "lookalike";
    }

    @Override
    public ImmutableMap<String, Object> parameters() {
      return ImmutableMap.of();
    }

    @Override
    public Requirements requirements() {
      return Requirements.none().withExactFloat64();
    }

    @Override
    public ModuleUpdate merge(ModuleMerge module) {
      return MergeAlgorithm.cat().merge(module);
    }
  }
}

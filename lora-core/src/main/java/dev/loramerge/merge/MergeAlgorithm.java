package dev.loramerge.merge;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * A way to combine several adapters' updates of one module into one, as {@link LoraMerger} calls
 * it module by module.
 *
 * <p>Implementations are small immutable records (see {@code dev.loramerge.algorithms}) whose
 * {@code toString()} names every parameter, seed included; the merger records {@link #name()}
 * and {@link #parameters()} in the output's metadata, and asks {@link #requirements()} what the
 * method needs of it, never which method it is. {@link #merge} must be a pure function of
 * its inputs and {@link ModuleMerge#random} draws, so that results do not depend on thread count
 * or module order.
 */
public interface MergeAlgorithm {
  /** The name users know: PEFT's combination type ({@code ties_svd}) or the method's own. */
  String name();

  /** Every parameter, in a stable order, for the recipe. */
  ImmutableMap<String, Object> parameters();

  /** What the method needs of the merger; by default nothing: any ranks, factors as given. */
  default Requirements requirements() {
    return Requirements.none();
  }

  /**
   * Merges one module.
   *
   * @param module the inputs, their weights, what the merger offers, a manager for arrays, and
   *     the seeded random streams
   * @return the merged update, handed over to the merger
   */
  ModuleUpdate merge(ModuleMerge module);

  /**
   * The same method on the full updates, for a method on the factors that has one ({@code ties} →
   * {@code ties_svd}, {@code linear} → {@code svd}): what a module in a kind without LoRA factors
   * (LoHa, LoKr, a full difference) can be merged with instead, which the merger names when it
   * refuses one. Empty by default.
   */
  default Optional<MergeAlgorithm> onFullUpdates() {
    return Optional.empty();
  }

  /**
   * This method as {@link TaskArithmetic} on the full updates, for a method that is one: what the
   * merger runs on a GPU for many modules at once where the merge's device is one, with the bits
   * {@link #merge} gives. Empty by default, and for a method whose pruning or combination it does
   * not describe: that method's {@link #merge} runs on the host everywhere.
   */
  default Optional<TaskArithmetic> taskArithmetic() {
    return Optional.empty();
  }

  /**
   * The exact weighted sum Σ wᵢ·sᵢ·BᵢAᵢ as one adapter of rank Σ rᵢ: B' = [w₁s₁B₁ … wₙsₙBₙ],
   * A' = [A₁; …; Aₙ] (PEFT's {@code cat}; what diffusers' {@code set_adapters} computes at run
   * time). The default of {@link LoraMerger}.
   */
  static MergeAlgorithm cat() {
    return CatAlgorithm.INSTANCE;
  }

  /**
   * What a method needs of the merger.
   *
   * @param equalRanks every adapter's module must have the same rank (PEFT's {@code linear},
   *     {@code ties}, {@code dare_*} and {@code magnitude_prune} merge the factors element by
   *     element)
   * @param reRanked the result is re-ranked by SVD to the target rank, as PEFT's {@code *_svd}
   *     types are (a {@link dev.loramerge.merge.spi.ModuleUpdate.Dense dense} update always is)
   * @param exactInFloat64 the method is exact and reads its inputs in float64 ({@link #cat()}
   *     is): a fuse then {@linkplain dev.loramerge.merge.spi.Offer.Precision#FLOAT64 offers
   *     float64} and adds the update without rounding it to float32 first. Other methods' updates
   *     are rounded to float32 in a fuse as in a merge, so that fusing the merged adapter and
   *     fusing directly give the same weights.
   * @param fullUpdates the method reads each input's full update ({@link
   *     dev.loramerge.merge.spi.ModuleInput#delta()}) and its weight, never its factors, as PEFT's
   *     {@code *_svd} types do: the merger then hands it a module in any kind whose update it can
   *     materialise (LoHa, LoKr, a full difference; DoRA with the base weights) as that update,
   *     beside the LoRAs' s·B·A
   */
  record Requirements(boolean equalRanks, boolean reRanked, boolean exactInFloat64, boolean fullUpdates) {
    private static final Requirements NONE = new Requirements(false, false, false, false);

    /** Nothing: any ranks, the result as the method gives it, float32 in a fuse. */
    public static Requirements none() {
      return NONE;
    }

    /** These requirements, and equal ranks. */
    public Requirements withEqualRanks() {
      return new Requirements(true, reRanked, exactInFloat64, fullUpdates);
    }

    /** These requirements, and the result re-ranked. */
    public Requirements withReRanking() {
      return new Requirements(equalRanks, true, exactInFloat64, fullUpdates);
    }

    /** These requirements, and float64 in a fuse. */
    public Requirements withExactFloat64() {
      return new Requirements(equalRanks, reRanked, true, fullUpdates);
    }

    /** These requirements, and only full updates read. */
    public Requirements withFullUpdates() {
      return new Requirements(equalRanks, reRanked, exactInFloat64, true);
    }
  }
}

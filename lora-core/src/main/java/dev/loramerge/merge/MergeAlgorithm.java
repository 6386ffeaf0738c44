package dev.loramerge.merge;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;

/**
 * A way to combine several adapters' updates of one module into one, as {@link LoraMerger} calls
 * it module by module.
 *
 * <p>Implementations are small immutable classes (see {@code dev.loramerge.algorithms}) whose
 * {@code toString()} names every parameter, seed included; the merger records {@link #name()}
 * and {@link #parameters()} in the output's metadata. {@link #merge} must be a pure function of
 * its inputs and {@link ModuleMerge#random} draws, so that results do not depend on thread count
 * or module order.
 */
public interface MergeAlgorithm {
  /** The name users know: PEFT's combination type ({@code ties_svd}) or the method's own. */
  String name();

  /** Every parameter, in a stable order, for the recipe. */
  ImmutableMap<String, Object> parameters();

  /**
   * Whether every adapter's module must have the same rank (PEFT's {@code linear}, {@code ties},
   * {@code dare_*} and {@code magnitude_prune} merge the factors element by element).
   */
  default boolean requiresEqualRanks() {
    return false;
  }

  /**
   * Whether the result is re-ranked by SVD to the target rank, as PEFT's {@code *_svd} types
   * are. A dense update is always re-ranked.
   */
  default boolean reRanks() {
    return false;
  }

  /**
   * Whether the method is exact and takes its inputs' factors in float64 ({@link #cat()} does):
   * a fuse then adds the update without rounding it to float32 first. Other methods get float32
   * factors, and a fuse adds their update as they return it, rounded to float32, so that fusing
   * the merged adapter and fusing directly give the same weights.
   */
  default boolean exactInFloat64() {
    return false;
  }

  /**
   * Merges one module.
   *
   * @param module the inputs, their weights, a manager that owns every array created here, and
   *     the seeded random streams
   * @return the merged update, owned by {@code module.manager()}
   */
  ModuleUpdate merge(ModuleMerge module);

  /**
   * The exact weighted sum Σ wᵢ·sᵢ·BᵢAᵢ as one adapter of rank Σ rᵢ: B' = [w₁s₁B₁ … wₙsₙBₙ],
   * A' = [A₁; …; Aₙ] (PEFT's {@code cat}; what diffusers' {@code set_adapters} computes at run
   * time). The default of {@link LoraMerger}.
   */
  static MergeAlgorithm cat() {
    return CatAlgorithm.INSTANCE;
  }
}

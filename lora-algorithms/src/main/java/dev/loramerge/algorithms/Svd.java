package dev.loramerge.algorithms;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;

/**
 * PEFT's {@code svd}: the weighted sum Σ wᵢ·sᵢ·BᵢAᵢ truncated to the target rank by SVD. Unlike
 * PEFT, which builds every m×n update and runs a full SVD, the truncation is the exact factored
 * SVD of the stacked factors (O((m+n)·R²) for R = Σ rᵢ), so it matches the optimal truncation to
 * float rounding at a fraction of the cost. Ranks may differ.
 *
 * <p>It has no parameters (the target rank is the merger's, {@code LoraMerger.Builder.rank}); instances
 * are equal.
 */
public record Svd() implements MergeAlgorithm {
  /** The method. */
  public static Svd of() {
    return new Svd();
  }

  @Override
  public String name() {
    return "svd";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of();
  }

  @Override
  public Requirements requirements() {
    return Requirements.none().withReRanking().withExactFloat64();
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    return MergeAlgorithm.cat().merge(module);
  }

  @Override
  public String toString() {
    return "Svd{}";
  }
}

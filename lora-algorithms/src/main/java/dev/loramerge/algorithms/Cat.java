package dev.loramerge.algorithms;

import dev.loramerge.merge.MergeAlgorithm;

/**
 * PEFT's {@code cat}, the exact weighted sum Σ wᵢ·sᵢ·BᵢAᵢ as one adapter of rank Σ rᵢ: {@link
 * MergeAlgorithm#cat()}, which this names for users who look for it here. Ranks may differ.
 */
public final class Cat {
  private Cat() {}

  /**
   * The method: the very instance {@link MergeAlgorithm#cat()} returns, so that the merger
   * recognizes it and fuses it without building factor arrays in libtorch.
   */
  public static MergeAlgorithm of() {
    return MergeAlgorithm.cat();
  }
}

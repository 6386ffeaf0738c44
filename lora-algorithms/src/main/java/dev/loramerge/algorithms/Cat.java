package dev.loramerge.algorithms;

import dev.loramerge.merge.MergeAlgorithm;

/**
 * PEFT's {@code cat}, the exact weighted sum Σ wᵢ·sᵢ·BᵢAᵢ as one adapter of rank Σ rᵢ: {@link
 * MergeAlgorithm#cat()}, which this names for users who look for it here. Ranks may differ.
 */
public final class Cat {
  private Cat() {}

  /** The method, {@link MergeAlgorithm#cat()}. */
  public static MergeAlgorithm of() {
    return MergeAlgorithm.cat();
  }
}

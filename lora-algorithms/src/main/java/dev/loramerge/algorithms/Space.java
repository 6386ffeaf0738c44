package dev.loramerge.algorithms;

import java.util.Locale;

/** Where an element-wise method prunes and combines the adapters' task tensors. */
public enum Space {
  /**
   * On each adapter's A and then its B, each weighted by vᵢ = √(wᵢ·sᵢ) (PEFT's {@code ties},
   * {@code dare_*}, {@code magnitude_prune}): all ranks must be equal, and the result has cross
   * terms BᵢAⱼ by construction, as PEFT's has.
   */
  FACTORS,
  /**
   * On the full updates sᵢ·BᵢAᵢ weighted by wᵢ, the dense result re-ranked by SVD to the target
   * rank (PEFT's {@code *_svd} types): ranks may differ.
   */
  UPDATES;

  /** {@code name} as PEFT names the method in this space: {@code ties} or {@code ties_svd}. */
  String methodName(String name) {
    return this == FACTORS ? name : name + "_svd";
  }

  @Override
  public String toString() {
    return name().toLowerCase(Locale.ROOT);
  }
}

package dev.loramerge.algorithms;

import ai.djl.ndarray.NDArray;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.MergeAlgorithm;
import dev.loramerge.spi.ModuleInput;
import dev.loramerge.spi.ModuleMerge;
import dev.loramerge.spi.ModuleUpdate;

/**
 * PEFT's {@code linear}: with cᵢ = wᵢ·sᵢ, A' = Σ sign(cᵢ)·√|cᵢ|·Aᵢ and B' = Σ √|cᵢ|·Bᵢ (the sign on
 * A only, as PEFT does since its negative-weight fix). All ranks must be equal. B'A' has cross
 * terms BᵢAⱼ, so it equals the weighted sum only for one adapter; {@link Cat} is exact.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Linear implements MergeAlgorithm {
  private static final Linear INSTANCE = new Linear();

  private Linear() {}

  /** The method (it has no parameters). */
  public static Linear of() {
    return INSTANCE;
  }

  @Override
  public String name() {
    return "linear";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of();
  }

  @Override
  public boolean requiresEqualRanks() {
    return true;
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    NDArray down = null;
    NDArray up = null;
    for (ModuleInput input : module.inputs()) {
      double c = input.weight() * input.scale();
      double root = Math.sqrt(Math.abs(c));
      NDArray weightedDown = input.down().mul(Math.signum(c) * root);
      NDArray weightedUp = input.up().mul(root);
      down = down == null ? weightedDown : down.addi(weightedDown);
      up = up == null ? weightedUp : up.addi(weightedUp);
    }
    return ModuleUpdate.factored(up, down);
  }

  @Override
  public String toString() {
    return "Linear{}";
  }
}

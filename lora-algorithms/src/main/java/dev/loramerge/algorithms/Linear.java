package dev.loramerge.algorithms;

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
    float[] down = null;
    float[] up = null;
    for (ModuleInput input : module.inputs()) {
      double c = input.weight() * input.scale();
      double root = Math.sqrt(Math.abs(c));
      // Each factor times its coefficient rounded to float32, summed in order in float32: what
      // PEFT's tensor arithmetic does, without a native call per step.
      float downCoefficient = (float) (Math.signum(c) * root);
      float upCoefficient = (float) root;
      down = accumulate(down, input.downValues(), downCoefficient);
      up = accumulate(up, input.upValues(), upCoefficient);
    }
    return ModuleUpdate.factored(up, down, module.inputs().get(0).module().rank());
  }

  /** {@code sum + coefficient·values}, or the scaled values when there is no sum yet. */
  private static float[] accumulate(float[] sum, float[] values, float coefficient) {
    if (sum == null) {
      for (int i = 0; i < values.length; i++) {
        values[i] *= coefficient;
      }
      return values;
    }
    for (int i = 0; i < values.length; i++) {
      sum[i] += values[i] * coefficient;
    }
    return sum;
  }

  @Override
  public String toString() {
    return "Linear{}";
  }
}

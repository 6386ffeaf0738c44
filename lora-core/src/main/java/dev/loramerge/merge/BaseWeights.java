package dev.loramerge.merge;

import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import java.util.Optional;

/**
 * The base model's weights, by module, for the merges that need them: a DoRA module becomes a
 * LoRA only through its fused weight, which reads the base weight (see {@link
 * LoraMerger.Builder#baseWeights}).
 */
@FunctionalInterface
public interface BaseWeights {
  /** The base weight module {@code key} updates, if the base has it. */
  Optional<TensorData> weight(ModuleKey key);

  /** No base weights: merging a DoRA module is refused. */
  static BaseWeights none() {
    return key -> Optional.empty();
  }
}

package dev.loramerge.merge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.AdapterKind;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.BlockWeights;

/**
 * One adapter of a merge, with its weight and its block weights.
 *
 * @param adapter the adapter
 * @param weight the user's weight, any finite number (negative subtracts)
 * @param blocks the per-block weights that further scale each module
 */
public record MergeInput(LoraAdapter adapter, double weight, BlockWeights blocks) {
  /** Validates. */
  public MergeInput {
    checkNotNull(adapter, "adapter");
    checkNotNull(blocks, "blocks");
    checkArgument(Double.isFinite(weight), "weight must be finite, got %s for adapter '%s'", weight, adapter.name());
  }

  /**
   * The effective weight of module {@code key}: the weight times its block's weight. Block
   * weights do not act on a {@linkplain AdapterKind#REPLACEMENT replacement}, which is all or
   * nothing: its weight is the adapter's.
   */
  public double weight(ModuleKey key) {
    LoraModule module = adapter.modules().get(key);
    return module != null && module.adapterKind() == AdapterKind.REPLACEMENT ? weight : weight * blocks.weight(key);
  }
}

package dev.loramerge.arch;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.ModuleKey;
import java.util.Optional;

/**
 * The scale of one of an architecture's RMS norms: a 1-d weight that no LoRA adapts, but that an
 * adapter may replace whole ({@link dev.loramerge.AdapterKind#REPLACEMENT}), as BFL's Flux.1
 * control LoRAs replace the attentions' query and key norms.
 *
 * <p>{@code key} is the norm's diffusers path ({@code transformer_blocks.0.attn.norm_q}), whose
 * weight is {@code <path>.weight}; {@code originalPath} is the weight's name in the original
 * checkpoint without its {@code .scale} ({@code double_blocks.0.img_attn.norm.query_norm}).
 * Instances are immutable and thread-safe.
 *
 * @param key the norm's canonical name
 * @param size the number of values of its scale, positive
 * @param blockId the block-weight id of the block that holds it, if any
 * @param originalPath the path of the norm in the original checkpoint
 */
public record NormScale(ModuleKey key, long size, Optional<String> blockId, String originalPath) {
  /**
   * Validates the spec.
   *
   * @throws IllegalArgumentException when the size is not positive or the path is empty
   */
  public NormScale {
    checkNotNull(key, "key");
    checkNotNull(blockId, "blockId");
    checkNotNull(originalPath, "originalPath");
    checkArgument(size > 0, "norm '%s': size must be positive, got %s", key, size);
    checkArgument(!originalPath.isEmpty(), "norm '%s': empty original path", key);
  }

  /** The shape of the scale, {@code [size]}. A new array on each call. */
  public long[] weightShape() {
    return new long[] {size};
  }
}

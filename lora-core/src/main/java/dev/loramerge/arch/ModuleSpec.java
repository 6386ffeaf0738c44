package dev.loramerge.arch;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.LoraModule.Kind;
import dev.loramerge.ModuleKey;
import java.util.Optional;

/**
 * One module of an {@link Architecture} that a LoRA can target: a Linear or Conv2d layer of the
 * UNet or a text encoder, with the shape of its base weight.
 *
 * <p>For a linear layer {@code inFeatures} and {@code outFeatures} are its features and {@code
 * kernelSize} is 1; for a convolution they are its channels and {@code kernelSize} is the side
 * of its square kernel (1 or 3 in SD1.5 and SDXL). {@code blockId} is the LoRA Block Weight id
 * the module belongs to ({@code "BASE"}, {@code "IN04"}, {@code "M00"}, {@code "OUT11"}), empty
 * where the block-weight tools give it none (see {@link Architecture} for the map). {@code
 * originalPath} is the module's path in the original CompVis / Stability ({@code sgm}) UNet
 * checkpoint, e.g. {@code input_blocks.4.1.transformer_blocks.0.attn1.to_q}; it is empty for
 * text-encoder modules.
 *
 * <p>Instances are immutable and thread-safe.
 *
 * @param key the module's canonical name
 * @param kind whether the module is a linear layer or a convolution (with a square kernel)
 * @param inFeatures input features (linear) or channels (convolution), positive
 * @param outFeatures output features (linear) or channels (convolution), positive
 * @param kernelSize the convolution's kernel side; 1 for a linear layer
 * @param blockId the LBW block id, if the module has one
 * @param originalPath the path in the original UNet checkpoint, for UNet modules
 */
public record ModuleSpec(
    ModuleKey key,
    Kind kind,
    long inFeatures,
    long outFeatures,
    int kernelSize,
    Optional<String> blockId,
    Optional<String> originalPath) {

  /**
   * Validates the spec.
   *
   * @throws IllegalArgumentException when a size is not positive, a linear layer has a kernel
   *     size other than 1, or an id or path is empty
   */
  public ModuleSpec {
    checkNotNull(key, "key");
    checkNotNull(kind, "kind");
    checkNotNull(blockId, "blockId");
    checkNotNull(originalPath, "originalPath");
    checkArgument(
        inFeatures > 0 && outFeatures > 0,
        "module '%s': features must be positive, got in %s and out %s",
        key,
        inFeatures,
        outFeatures);
    checkArgument(kernelSize > 0, "module '%s': kernel size must be positive, got %s", key, kernelSize);
    checkArgument(
        kind == Kind.CONV || kernelSize == 1,
        "module '%s': a linear layer has kernel size 1, got %s",
        key,
        kernelSize);
    checkArgument(
        blockId.map(id -> !id.isEmpty()).orElse(true), "module '%s': empty block id", key);
    checkArgument(
        originalPath.map(path -> !path.isEmpty()).orElse(true),
        "module '%s': empty original path",
        key);
  }

  /**
   * The shape of the base weight: {@code [out, in]} for a linear layer, {@code [out, in, k, k]}
   * for a convolution. A new array on each call.
   */
  public long[] weightShape() {
    return kind == Kind.LINEAR
        ? new long[] {outFeatures, inFeatures}
        : new long[] {outFeatures, inFeatures, kernelSize, kernelSize};
  }
}

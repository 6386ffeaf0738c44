package dev.loramerge.internal.arch;

import dev.loramerge.Component;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;

/**
 * Counts every parameter of one component (weights, biases, norms, embeddings) from an
 * architecture's Linear and Conv2d modules alone, so a descriptor can be checked against the
 * published parameter totals: if a single module were missing or had a wrong size, the total
 * would be off.
 *
 * <p>What the listed modules imply, from diffusers' and transformers' layer definitions:
 *
 * <ul>
 *   <li>every Linear and Conv2d has a bias of its output size, except attention {@code
 *       to_q/to_k/to_v} (diffusers' {@code Attention} defaults to {@code bias=False}) and CLIP's
 *       {@code text_projection};
 *   <li>a resnet has GroupNorms (weight and bias) over the inputs of {@code conv1} and {@code
 *       conv2}; a {@code Transformer2DModel} one over the input of {@code proj_in}; a transformer
 *       block three LayerNorms over the input of {@code attn1.to_q}; {@code conv_out} one over
 *       its input ({@code conv_norm_out});
 *   <li>a CLIP text model has token and position embeddings ({@link #CLIP_VOCABULARY} ×
 *       hidden, {@link #CLIP_POSITIONS} × hidden), two LayerNorms per layer and a final one.
 * </ul>
 */
public final class ParameterTally {
  /** {@code vocab_size} of every bundled CLIP config. */
  public static final long CLIP_VOCABULARY = 49408;

  /** {@code max_position_embeddings} of every bundled CLIP config. */
  public static final long CLIP_POSITIONS = 77;

  private ParameterTally() {}

  /** All parameters of {@code component} in {@code architecture}. */
  public static long total(Architecture architecture, Component component) {
    long total = 0;
    long hidden = 0;
    for (ModuleSpec spec : architecture.modules().values()) {
      if (spec.key().component() != component) {
        continue;
      }
      String path = spec.key().path();
      total += elements(spec.weightShape());
      if (!path.matches(".*\\.attn[12]\\.to_[qkv]") && !path.equals("text_projection")) {
        total += spec.outFeatures();
      }
      total += norms(path, spec.inFeatures());
      if (path.endsWith(".self_attn.q_proj")) {
        hidden = spec.inFeatures();
      }
    }
    if (component != Component.UNET) {
      total += (CLIP_VOCABULARY + CLIP_POSITIONS) * hidden + layerNorm(hidden);
    }
    return total;
  }

  /** The norm parameters that sit in front of the module at {@code path}. */
  private static long norms(String path, long in) {
    if (path.matches(".*resnets\\.\\d+\\.conv[12]")
        || path.endsWith(".proj_in")
        || path.equals("conv_out")) {
      return groupNorm(in);
    }
    if (path.endsWith(".attn1.to_q")) {
      return 3 * layerNorm(in);
    }
    if (path.endsWith(".self_attn.q_proj")) {
      return 2 * layerNorm(in);
    }
    return 0;
  }

  private static long groupNorm(long channels) {
    return 2 * channels;
  }

  private static long layerNorm(long features) {
    return 2 * features;
  }

  private static long elements(long[] shape) {
    long product = 1;
    for (long dim : shape) {
      product *= dim;
    }
    return product;
  }
}

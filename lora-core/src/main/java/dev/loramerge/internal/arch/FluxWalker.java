package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableList;
import dev.loramerge.Component;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.arch.NormScale;
import java.util.Optional;

/**
 * Lists the Linear layers of a diffusers {@code FluxTransformer2DModel} from its {@code
 * config.json}, and names each as Black Forest Labs' original checkpoint ({@code
 * flux1-dev.safetensors}) does, following diffusers' {@code convert_flux_to_diffusers.py}.
 *
 * <p>What is modelled, with the inner width {@code num_attention_heads × attention_head_dim}
 * (3072) and the MLP width 4 × that:
 *
 * <ul>
 *   <li>{@code x_embedder} ({@code img_in}), {@code context_embedder} ({@code txt_in}), the
 *       timestep, guidance (with {@code guidance_embeds}) and pooled-text embedders {@code
 *       time_text_embed.*_embedder.linear_1/2} ({@code time_in}, {@code guidance_in}, {@code
 *       vector_in} {@code .in_layer/.out_layer});
 *   <li>per double block {@code transformer_blocks.N}: the modulations {@code norm1.linear} and
 *       {@code norm1_context.linear} ({@code img_mod.lin}, {@code txt_mod.lin}, 6 × inner), the
 *       attention's {@code to_q/to_k/to_v} and {@code add_q_proj/add_k_proj/add_v_proj} (parts
 *       of the fused {@code img_attn.qkv} and {@code txt_attn.qkv}), {@code to_out.0} and {@code
 *       to_add_out} ({@code img_attn.proj}, {@code txt_attn.proj}), and the feed-forwards {@code
 *       ff.net.0.proj/ff.net.2} and {@code ff_context.*} ({@code img_mlp.0/2}, {@code
 *       txt_mlp.0/2});
 *   <li>per single block {@code single_transformer_blocks.N}: {@code norm.linear} ({@code
 *       modulation.lin}, 3 × inner), {@code attn.to_q/to_k/to_v} and {@code proj_mlp} (parts of
 *       the fused {@code linear1}), and {@code proj_out} ({@code linear2}, from inner + MLP);
 *   <li>{@code norm_out.linear} (the original {@code final_layer.adaLN_modulation.1} with its
 *       shift and scale halves swapped) and {@code proj_out} ({@code final_layer.linear}).
 * </ul>
 *
 * <p>The attentions' RMS norms ({@code attn.norm_q}, {@code norm_k}, {@code norm_added_q}, {@code
 * norm_added_k}; BFL's {@code img_attn.norm.query_norm}, {@code key_norm}, {@code txt_attn.…},
 * and a single block's {@code norm.query_norm}, {@code norm.key_norm}) are scales of {@code
 * attention_head_dim} values, not Linear layers: they are listed apart, as {@link NormScale}s,
 * which only a replacement adapts (BFL's control LoRAs; diffusers' {@code
 * _convert_bfl_flux_control_lora_to_diffusers} names them so). Block ids are the ones Flux block-weight tools use: {@code
 * double_blocks.N} and {@code single_blocks.N}; the embedders and the final layer have none.
 */
final class FluxWalker {
  static final String MODEL_CLASS = "FluxTransformer2DModel";

  /** The MLP's hidden width is 4 × the inner width (BFL's {@code mlp_ratio}). */
  private static final int MLP_RATIO = 4;

  /** The sinusoidal timestep and guidance projections are 256 wide. */
  private static final int TIME_PROJECTION = 256;

  /** What the walk found: the modules, the fused weights of the original checkpoint and the norms' scales. */
  record Walk(ImmutableList<ModuleSpec> specs, ImmutableList<FusedModule> fused, ImmutableList<NormScale> norms) {}

  private final ModelConfig config;
  private final ImmutableList.Builder<ModuleSpec> specs = ImmutableList.builder();
  private final ImmutableList.Builder<FusedModule> fused = ImmutableList.builder();
  private final ImmutableList.Builder<NormScale> norms = ImmutableList.builder();

  private FluxWalker(ModelConfig config) {
    this.config = config;
  }

  /**
   * The transformer's Linear layers and fused weights.
   *
   * @throws IllegalArgumentException when the config is not a {@code FluxTransformer2DModel} or
   *     lacks a value the walk needs
   */
  static Walk walk(ModelConfig config) {
    return new FluxWalker(config).walk();
  }

  private Walk walk() {
    if (!config.modelClass().equals(MODEL_CLASS)) {
      throw new IllegalArgumentException(
          config.source() + ": the model class is '" + config.modelClass() + "', expected '" + MODEL_CLASS + "'");
    }
    config.requireDefault("patch_size", 1);
    long inner = (long) config.positive("num_attention_heads") * config.positive("attention_head_dim");
    long mlp = MLP_RATIO * inner;
    long channels = config.positive("in_channels");
    long headDim = config.positive("attention_head_dim");

    linear("x_embedder", "img_in", channels, inner, Optional.empty());
    linear("context_embedder", "txt_in", config.positive("joint_attention_dim"), inner, Optional.empty());
    embedder("timestep_embedder", "time_in", TIME_PROJECTION, inner);
    if (config.bool("guidance_embeds", false)) {
      embedder("guidance_embedder", "guidance_in", TIME_PROJECTION, inner);
    }
    embedder("text_embedder", "vector_in", config.positive("pooled_projection_dim"), inner);

    int doubleBlocks = config.positive("num_layers");
    for (int block = 0; block < doubleBlocks; block++) {
      String path = "transformer_blocks." + block + ".";
      String original = "double_blocks." + block + ".";
      Optional<String> id = Optional.of("double_blocks." + block);
      linear(path + "norm1.linear", original + "img_mod.lin", inner, 6 * inner, id);
      linear(path + "norm1_context.linear", original + "txt_mod.lin", inner, 6 * inner, id);
      fusedLinear(original + "img_attn.qkv", inner, id,
          part(path + "attn.to_q", inner), part(path + "attn.to_k", inner), part(path + "attn.to_v", inner));
      fusedLinear(original + "txt_attn.qkv", inner, id,
          part(path + "attn.add_q_proj", inner), part(path + "attn.add_k_proj", inner),
          part(path + "attn.add_v_proj", inner));
      linear(path + "attn.to_out.0", original + "img_attn.proj", inner, inner, id);
      linear(path + "attn.to_add_out", original + "txt_attn.proj", inner, inner, id);
      linear(path + "ff.net.0.proj", original + "img_mlp.0", inner, mlp, id);
      linear(path + "ff.net.2", original + "img_mlp.2", mlp, inner, id);
      linear(path + "ff_context.net.0.proj", original + "txt_mlp.0", inner, mlp, id);
      linear(path + "ff_context.net.2", original + "txt_mlp.2", mlp, inner, id);
      norm(path + "attn.norm_q", original + "img_attn.norm.query_norm", headDim, id);
      norm(path + "attn.norm_k", original + "img_attn.norm.key_norm", headDim, id);
      norm(path + "attn.norm_added_q", original + "txt_attn.norm.query_norm", headDim, id);
      norm(path + "attn.norm_added_k", original + "txt_attn.norm.key_norm", headDim, id);
    }
    int singleBlocks = config.positive("num_single_layers");
    for (int block = 0; block < singleBlocks; block++) {
      String path = "single_transformer_blocks." + block + ".";
      String original = "single_blocks." + block + ".";
      Optional<String> id = Optional.of("single_blocks." + block);
      linear(path + "norm.linear", original + "modulation.lin", inner, 3 * inner, id);
      fusedLinear(original + "linear1", inner, id,
          part(path + "attn.to_q", inner), part(path + "attn.to_k", inner), part(path + "attn.to_v", inner),
          part(path + "proj_mlp", mlp));
      linear(path + "proj_out", original + "linear2", inner + mlp, inner, id);
      norm(path + "attn.norm_q", original + "norm.query_norm", headDim, id);
      norm(path + "attn.norm_k", original + "norm.key_norm", headDim, id);
    }
    // diffusers' AdaLayerNormContinuous chunks (scale, shift); BFL's final layer (shift, scale).
    ModuleKey normOut = key("norm_out.linear");
    specs.add(spec(normOut, inner, 2 * inner, Optional.empty(), Optional.empty()));
    fused.add(new FusedModule("final_layer.adaLN_modulation.1", inner, Optional.empty(),
        ImmutableList.of(new FusedModule.Segment(normOut, inner, inner), new FusedModule.Segment(normOut, 0, inner))));
    linear("proj_out", "final_layer.linear", inner, config.positive("out_channels", (int) channels), Optional.empty());
    return new Walk(specs.build(), fused.build(), norms.build());
  }

  private void norm(String path, String original, long size, Optional<String> id) {
    norms.add(new NormScale(key(path), size, id, original));
  }

  private void embedder(String name, String original, long in, long inner) {
    String path = "time_text_embed." + name + ".";
    linear(path + "linear_1", original + ".in_layer", in, inner, Optional.empty());
    linear(path + "linear_2", original + ".out_layer", inner, inner, Optional.empty());
  }

  private static FusedModule.Segment part(String path, long rows) {
    return new FusedModule.Segment(key(path), 0, rows);
  }

  private void fusedLinear(String original, long in, Optional<String> id, FusedModule.Segment... parts) {
    for (FusedModule.Segment part : parts) {
      specs.add(spec(part.key(), in, part.rows(), id, Optional.empty()));
    }
    fused.add(new FusedModule(original, in, id, ImmutableList.copyOf(parts)));
  }

  private void linear(String path, String original, long in, long out, Optional<String> id) {
    specs.add(spec(key(path), in, out, id, Optional.of(original)));
  }

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  private static ModuleSpec spec(ModuleKey key, long in, long out, Optional<String> id, Optional<String> original) {
    return new ModuleSpec(key, LoraModule.Kind.LINEAR, in, out, 1, id, original);
  }
}

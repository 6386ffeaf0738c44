package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableList;
import dev.loramerge.Component;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import java.util.Optional;
import java.util.Set;

/**
 * Lists the Linear and Conv2d layers of a diffusers {@code SD3Transformer2DModel} (SD3.5 Medium
 * and Large) from its {@code config.json}, and names each as Stability's original MMDiT
 * checkpoint does, following diffusers' {@code scripts/convert_sd3_to_diffusers.py}.
 *
 * <p>With inner width {@code num_attention_heads × attention_head_dim}:
 *
 * <ul>
 *   <li>{@code pos_embed.proj} ({@code x_embedder.proj}, a patch×patch convolution), {@code
 *       context_embedder}, {@code time_text_embed.timestep_embedder.linear_1/2} ({@code
 *       t_embedder.mlp.0/2}) and {@code text_embedder.linear_1/2} ({@code y_embedder.mlp.0/2});
 *   <li>per block {@code transformer_blocks.N} ({@code joint_blocks.N}): {@code norm1.linear}
 *       ({@code x_block.adaLN_modulation.1}, 6 × inner, 9 × with a second attention), the image
 *       attention's {@code to_q/to_k/to_v} (parts of {@code x_block.attn.qkv}) and {@code
 *       to_out.0} ({@code x_block.attn.proj}), the blocks of {@code dual_attention_layers}' {@code
 *       attn2} ({@code x_block.attn2.qkv}, {@code .proj}), {@code ff.net.0.proj/ff.net.2} ({@code
 *       x_block.mlp.fc1/fc2}); the context stream's {@code norm1_context.linear}, {@code
 *       add_q/k/v_proj} ({@code context_block.attn.qkv}), {@code to_add_out} and {@code
 *       ff_context}, except that the last block's context stream is only normalised and
 *       projected (no {@code to_add_out}, no {@code ff_context}, and a 2 × inner {@code
 *       norm1_context.linear} whose halves are swapped against the original's);
 *   <li>{@code norm_out.linear} ({@code final_layer.adaLN_modulation.1}, halves swapped) and {@code
 *       proj_out} ({@code final_layer.linear}).
 * </ul>
 *
 * <p>Block ids are {@code joint_blocks.N}; the embedders and the final layer have none.
 */
final class Sd3Walker {
  static final String MODEL_CLASS = "SD3Transformer2DModel";

  private static final int MLP_RATIO = 4;
  private static final int TIME_PROJECTION = 256;

  private final ModelConfig config;
  private final ImmutableList.Builder<ModuleSpec> specs = ImmutableList.builder();
  private final ImmutableList.Builder<FusedModule> fused = ImmutableList.builder();

  private Sd3Walker(ModelConfig config) {
    this.config = config;
  }

  /** The transformer's layers and fused weights. */
  static FluxWalker.Walk walk(ModelConfig config) {
    return new Sd3Walker(config).walk();
  }

  private FluxWalker.Walk walk() {
    if (!config.modelClass().equals(MODEL_CLASS)) {
      throw new IllegalArgumentException(
          config.source() + ": the model class is '" + config.modelClass() + "', expected '" + MODEL_CLASS + "'");
    }
    long inner = (long) config.positive("num_attention_heads") * config.positive("attention_head_dim");
    long mlp = MLP_RATIO * inner;
    int patch = config.positive("patch_size");
    long channels = config.positive("in_channels");
    int layers = config.positive("num_layers");
    Set<Integer> dual = Set.copyOf(config.indices("dual_attention_layers"));

    specs.add(new ModuleSpec(key("pos_embed.proj"), LoraModule.Kind.CONV, channels, inner, patch, Optional.empty(),
        Optional.of("x_embedder.proj")));
    linear("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0", TIME_PROJECTION, inner, Optional.empty());
    linear("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2", inner, inner, Optional.empty());
    linear("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0", config.positive("pooled_projection_dim"), inner,
        Optional.empty());
    linear("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2", inner, inner, Optional.empty());
    linear("context_embedder", "context_embedder", config.positive("joint_attention_dim"),
        config.positive("caption_projection_dim"), Optional.empty());

    for (int block = 0; block < layers; block++) {
      String path = "transformer_blocks." + block + ".";
      String x = "joint_blocks." + block + ".x_block.";
      String context = "joint_blocks." + block + ".context_block.";
      Optional<String> id = Optional.of("joint_blocks." + block);
      boolean last = block == layers - 1;
      boolean withAttn2 = dual.contains(block);
      linear(path + "norm1.linear", x + "adaLN_modulation.1", inner, (withAttn2 ? 9 : 6) * inner, id);
      qkv(x + "attn.qkv", inner, id, path + "attn.to_q", path + "attn.to_k", path + "attn.to_v");
      linear(path + "attn.to_out.0", x + "attn.proj", inner, inner, id);
      if (withAttn2) {
        qkv(x + "attn2.qkv", inner, id, path + "attn2.to_q", path + "attn2.to_k", path + "attn2.to_v");
        linear(path + "attn2.to_out.0", x + "attn2.proj", inner, inner, id);
      }
      linear(path + "ff.net.0.proj", x + "mlp.fc1", inner, mlp, id);
      linear(path + "ff.net.2", x + "mlp.fc2", mlp, inner, id);
      qkv(context + "attn.qkv", inner, id, path + "attn.add_q_proj", path + "attn.add_k_proj", path + "attn.add_v_proj");
      if (last) {
        swapped(path + "norm1_context.linear", context + "adaLN_modulation.1", inner, id);
      } else {
        linear(path + "norm1_context.linear", context + "adaLN_modulation.1", inner, 6 * inner, id);
        linear(path + "attn.to_add_out", context + "attn.proj", inner, inner, id);
        linear(path + "ff_context.net.0.proj", context + "mlp.fc1", inner, mlp, id);
        linear(path + "ff_context.net.2", context + "mlp.fc2", mlp, inner, id);
      }
    }
    swapped("norm_out.linear", "final_layer.adaLN_modulation.1", inner, Optional.empty());
    linear("proj_out", "final_layer.linear", inner, (long) patch * patch * config.positive("out_channels", (int) channels),
        Optional.empty());
    return new FluxWalker.Walk(specs.build(), fused.build(), ImmutableList.of());
  }

  /** A 2 × inner modulation whose (scale, shift) halves are the original's (shift, scale). */
  private void swapped(String path, String original, long inner, Optional<String> id) {
    ModuleKey key = key(path);
    specs.add(new ModuleSpec(key, LoraModule.Kind.LINEAR, inner, 2 * inner, 1, id, Optional.empty()));
    fused.add(new FusedModule(original, inner, id,
        ImmutableList.of(new FusedModule.Segment(key, inner, inner), new FusedModule.Segment(key, 0, inner))));
  }

  private void qkv(String original, long inner, Optional<String> id, String... parts) {
    ImmutableList.Builder<FusedModule.Segment> segments = ImmutableList.builder();
    for (String part : parts) {
      specs.add(new ModuleSpec(key(part), LoraModule.Kind.LINEAR, inner, inner, 1, id, Optional.empty()));
      segments.add(new FusedModule.Segment(key(part), 0, inner));
    }
    fused.add(new FusedModule(original, inner, id, segments.build()));
  }

  private void linear(String path, String original, long in, long out, Optional<String> id) {
    specs.add(new ModuleSpec(key(path), LoraModule.Kind.LINEAR, in, out, 1, id, Optional.of(original)));
  }

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }
}

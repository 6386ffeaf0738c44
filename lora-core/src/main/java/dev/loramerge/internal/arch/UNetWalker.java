package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableList;
import dev.loramerge.Component;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.ModuleSpec;
import java.util.Optional;

/**
 * Lists the Linear and Conv2d layers of a diffusers {@code UNet2DConditionModel} from its {@code
 * config.json}, in the order and with the sizes its constructor creates them, and names each one
 * as the original (CompVis / sgm) checkpoint does.
 *
 * <p>What is modelled, following {@code UNet2DConditionModel.__init__} and the blocks it builds:
 *
 * <ul>
 *   <li>{@code conv_in}, {@code time_embedding.linear_1/2} (input {@code block_out_channels[0]},
 *       width {@code time_embedding_dim} or 4 × {@code block_out_channels[0]}), SDXL's {@code
 *       add_embedding.linear_1/2} ({@code addition_embed_type: "text_time"}), {@code conv_out};
 *   <li>{@code DownBlock2D} / {@code CrossAttnDownBlock2D}: {@code layers_per_block} resnets (and
 *       as many {@code Transformer2DModel}s), a downsampler on every block but the last;
 *   <li>{@code UNetMidBlock2DCrossAttn}: resnet, transformer, resnet;
 *   <li>{@code UpBlock2D} / {@code CrossAttnUpBlock2D}: {@code layers_per_block + 1} resnets whose
 *       inputs include the skip connection from the down path, an upsampler on every block but
 *       the last;
 *   <li>{@code ResnetBlock2D}: {@code conv1}, {@code time_emb_proj}, {@code conv2}, and a 1×1
 *       {@code conv_shortcut} only when its input and output channels differ;
 *   <li>{@code Transformer2DModel}: {@code proj_in} / {@code proj_out} (Linear with {@code
 *       use_linear_projection}, 1×1 Conv2d without), and per {@code BasicTransformerBlock}
 *       self-attention {@code attn1}, cross-attention {@code attn2} whose keys and values come
 *       from {@code cross_attention_dim}, and the GEGLU feed-forward.
 * </ul>
 *
 * <p>Options that would add or reshape layers beyond these (class embeddings, encoder hidden
 * projections, scale-shift time embeddings, other block types, ...) are refused with a message,
 * never ignored. Options that touch no Linear or Conv2d weight (activations, norm groups and
 * epsilons, sample size, padding) are not read.
 */
final class UNetWalker {
  static final String MODEL_CLASS = "UNet2DConditionModel";

  /** The time embedding is 4 × block_out_channels[0] wide unless time_embedding_dim says otherwise. */
  private static final int TIME_EMBEDDING_MULT = 4;

  /** The feed-forward's hidden width is 4 × its input (diffusers' {@code FeedForward} mult). */
  private static final int FEED_FORWARD_MULT = 4;

  private final ModelConfig config;
  private final ImmutableList.Builder<ModuleSpec> specs = ImmutableList.builder();
  private long timeEmbeddingDim;
  private boolean linearProjection;

  private UNetWalker(ModelConfig config) {
    this.config = config;
  }

  /**
   * The UNet's Linear and Conv2d layers.
   *
   * @throws IllegalArgumentException when the config is not a {@code UNet2DConditionModel}, lacks
   *     a value the walk needs, or sets an option the walk does not model
   */
  static ImmutableList<ModuleSpec> walk(ModelConfig config) {
    return new UNetWalker(config).walk();
  }

  private ImmutableList<ModuleSpec> walk() {
    if (!config.modelClass().equals(MODEL_CLASS)) {
      throw new IllegalArgumentException(
          config.source() + ": the model class is '" + config.modelClass() + "', expected '" + MODEL_CLASS + "'");
    }
    refuseUnmodelledOptions();

    ImmutableList<Integer> channels = config.positives("block_out_channels");
    int blocks = channels.size();
    ImmutableList<String> downTypes = blockTypes("down_block_types", blocks);
    ImmutableList<String> upTypes = blockTypes("up_block_types", blocks);
    ImmutableList<Integer> layers = config.perBlock("layers_per_block", blocks);
    // diffusers' attention_head_dim has always meant the number of heads in these UNets; it
    // reads num_attention_heads first and falls back to it (diffusers#2011).
    ImmutableList<Integer> heads =
        config.perBlock(config.isSet("num_attention_heads") ? "num_attention_heads" : "attention_head_dim", blocks);
    ImmutableList<Integer> transformerLayers = config.perBlock("transformer_layers_per_block", blocks, 1);
    ImmutableList<Integer> crossAttentionDims = config.perBlock("cross_attention_dim", blocks, 1280);
    linearProjection = config.bool("use_linear_projection", false);

    int baseChannels = channels.get(0);
    timeEmbeddingDim = config.positive("time_embedding_dim", TIME_EMBEDDING_MULT * baseChannels);
    int inChannels = config.positive("in_channels", 4);
    int outChannels = config.positive("out_channels", 4);

    conv("conv_in", "input_blocks.0.0", inChannels, baseChannels, config.positive("conv_in_kernel", 3));
    // Positional time embedding: the sinusoidal projection has block_out_channels[0] features.
    linear("time_embedding.linear_1", "time_embed.0", baseChannels, timeEmbeddingDim);
    linear("time_embedding.linear_2", "time_embed.2", timeEmbeddingDim, timeEmbeddingDim);
    if (config.string("addition_embed_type", "").equals("text_time")) {
      // SDXL: pooled text embedding concatenated with the sinusoidal size and crop conditions.
      int additionInput = config.positive("projection_class_embeddings_input_dim");
      linear("add_embedding.linear_1", "label_emb.0.0", additionInput, timeEmbeddingDim);
      linear("add_embedding.linear_2", "label_emb.0.2", timeEmbeddingDim, timeEmbeddingDim);
    }

    // The original UNet numbers every (resnet [+ transformer]) and every downsampler as one
    // input block, so a running counter gives input_blocks.i whatever layers_per_block is.
    int inputBlock = 1;
    int out = baseChannels;
    for (int b = 0; b < blocks; b++) {
      boolean attention = hasAttention(downTypes.get(b), "CrossAttnDownBlock2D", "DownBlock2D");
      int in = out;
      out = channels.get(b);
      for (int j = 0; j < layers.get(b); j++) {
        String original = "input_blocks." + inputBlock;
        resnet("down_blocks." + b + ".resnets." + j, original + ".0", j == 0 ? in : out, out);
        if (attention) {
          transformer(
              "down_blocks." + b + ".attentions." + j,
              original + ".1",
              out,
              heads.get(b),
              transformerLayers.get(b),
              crossAttentionDims.get(b));
        }
        inputBlock++;
      }
      if (b < blocks - 1) {
        conv("down_blocks." + b + ".downsamplers.0.conv", "input_blocks." + inputBlock + ".0.op", out, out, 3);
        inputBlock++;
      }
    }

    int last = blocks - 1;
    int middle = channels.get(last);
    resnet("mid_block.resnets.0", "middle_block.0", middle, middle);
    transformer(
        "mid_block.attentions.0",
        "middle_block.1",
        middle,
        heads.get(last),
        transformerLayers.get(last),
        crossAttentionDims.get(last));
    resnet("mid_block.resnets.1", "middle_block.2", middle, middle);

    // Up blocks mirror the down path: block b works at block_out_channels reversed, and its last
    // resnet also takes the skip from the next-shallower level (input_channel in diffusers).
    int outputBlock = 0;
    int previousOut = channels.get(last);
    for (int b = 0; b < blocks; b++) {
      int level = last - b;
      boolean attention = hasAttention(upTypes.get(b), "CrossAttnUpBlock2D", "UpBlock2D");
      int blockOut = channels.get(level);
      int skipFromShallower = channels.get(Math.max(level - 1, 0));
      int resnets = layers.get(level) + 1;
      for (int j = 0; j < resnets; j++) {
        String original = "output_blocks." + outputBlock;
        int skip = j == resnets - 1 ? skipFromShallower : blockOut;
        int residual = j == 0 ? previousOut : blockOut;
        resnet("up_blocks." + b + ".resnets." + j, original + ".0", residual + skip, blockOut);
        if (attention) {
          transformer(
              "up_blocks." + b + ".attentions." + j,
              original + ".1",
              blockOut,
              heads.get(level),
              transformerLayers.get(level),
              crossAttentionDims.get(level));
        }
        if (j == resnets - 1 && b < last) {
          // The upsampler sits after the transformer when the block has one.
          conv(
              "up_blocks." + b + ".upsamplers.0.conv",
              original + (attention ? ".2" : ".1") + ".conv",
              blockOut,
              blockOut,
              3);
        }
        outputBlock++;
      }
      previousOut = blockOut;
    }

    conv("conv_out", "out.2", baseChannels, outChannels, config.positive("conv_out_kernel", 3));
    return specs.build();
  }

  private void refuseUnmodelledOptions() {
    config.requireDefault("class_embed_type");
    config.requireDefault("num_class_embeds");
    config.requireDefault("class_embeddings_concat", false);
    config.requireDefault("encoder_hid_dim");
    config.requireDefault("encoder_hid_dim_type");
    config.requireDefault("time_cond_proj_dim");
    config.requireDefault("time_embedding_type", "positional");
    config.requireDefault("addition_embed_type", "text_time");
    config.requireDefault("resnet_time_scale_shift", "default");
    config.requireDefault("dual_cross_attention", false);
    config.requireDefault("only_cross_attention", false);
    config.requireDefault("mid_block_only_cross_attention", false);
    config.requireDefault("mid_block_type", "UNetMidBlock2DCrossAttn");
    config.requireDefault("reverse_transformer_layers_per_block");
    config.requireDefault("attention_type", "default");
  }

  private ImmutableList<String> blockTypes(String key, int blocks) {
    ImmutableList<String> types = config.strings(key);
    if (types.size() != blocks) {
      throw new IllegalArgumentException(
          config.source() + ": '" + key + "' lists " + types.size() + " blocks but 'block_out_channels' " + blocks);
    }
    return types;
  }

  private boolean hasAttention(String type, String withAttention, String without) {
    if (type.equals(withAttention)) {
      return true;
    }
    if (type.equals(without)) {
      return false;
    }
    throw new IllegalArgumentException(
        config.source() + ": block type '" + type + "' is not modelled; supported: " + withAttention + ", " + without);
  }

  /** {@code ResnetBlock2D} with the default time-embedding shift. */
  private void resnet(String path, String original, long in, long out) {
    conv(path + ".conv1", original + ".in_layers.2", in, out, 3);
    linear(path + ".time_emb_proj", original + ".emb_layers.1", timeEmbeddingDim, out);
    conv(path + ".conv2", original + ".out_layers.3", out, out, 3);
    if (in != out) {
      conv(path + ".conv_shortcut", original + ".skip_connection", in, out, 1);
    }
  }

  /** {@code Transformer2DModel}; the original checkpoint's SpatialTransformer names match. */
  private void transformer(String path, String original, long channels, int heads, int layers, long crossDim) {
    // Head width is channels // heads, so the inner width is channels rounded down to whole heads.
    long inner = heads * (channels / heads);
    projection(path + ".proj_in", original + ".proj_in", channels, inner);
    for (int t = 0; t < layers; t++) {
      String block = ".transformer_blocks." + t;
      attention(path + block + ".attn1", original + block + ".attn1", inner, inner);
      attention(path + block + ".attn2", original + block + ".attn2", inner, crossDim);
      // GEGLU projects to twice the hidden width: one half is the value, the other the gate.
      long hidden = FEED_FORWARD_MULT * inner;
      linear(path + block + ".ff.net.0.proj", original + block + ".ff.net.0.proj", inner, 2 * hidden);
      linear(path + block + ".ff.net.2", original + block + ".ff.net.2", hidden, inner);
    }
    projection(path + ".proj_out", original + ".proj_out", inner, channels);
  }

  private void projection(String path, String original, long in, long out) {
    if (linearProjection) {
      linear(path, original, in, out);
    } else {
      conv(path, original, in, out, 1);
    }
  }

  /** Queries from {@code dim}; keys and values from {@code keyValueDim}. */
  private void attention(String path, String original, long dim, long keyValueDim) {
    linear(path + ".to_q", original + ".to_q", dim, dim);
    linear(path + ".to_k", original + ".to_k", keyValueDim, dim);
    linear(path + ".to_v", original + ".to_v", keyValueDim, dim);
    linear(path + ".to_out.0", original + ".to_out.0", dim, dim);
  }

  private void linear(String path, String original, long in, long out) {
    add(path, original, LoraModule.Kind.LINEAR, in, out, 1);
  }

  private void conv(String path, String original, long in, long out, int kernelSize) {
    add(path, original, LoraModule.Kind.CONV, in, out, kernelSize);
  }

  private void add(String path, String original, LoraModule.Kind kind, long in, long out, int kernelSize) {
    specs.add(
        new ModuleSpec(
            ModuleKey.of(Component.UNET, path),
            kind,
            in,
            out,
            kernelSize,
            BlockIds.ofOriginalPath(original),
            Optional.of(original)));
  }
}

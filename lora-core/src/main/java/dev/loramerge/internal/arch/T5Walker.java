package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableList;
import dev.loramerge.Component;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.ModuleSpec;
import java.util.Optional;

/**
 * Lists the Linear layers of a transformers {@code T5EncoderModel} from its {@code config.json}
 * (T5 v1.1 XXL, which Flux.1 and SD3 use): per block {@code
 * encoder.block.N.layer.0.SelfAttention.q/k/v} ({@code d_model} → {@code num_heads·d_kv}) and
 * {@code .o} (back), and the feed-forward {@code encoder.block.N.layer.1.DenseReluDense.wi_0} /
 * {@code wi_1} (gated, as {@code feed_forward_proj} {@code gated-…} builds it; {@code wi} when not
 * gated) and {@code wo}. None has a bias. The shared embedding, the relative-attention bias of
 * block 0 and the layer norms are not Linear layers and are not listed.
 *
 * <p>Every module is in LBW block {@code BASE} and has no original path: kohya, diffusers and the
 * single-file {@code t5xxl_fp16.safetensors} all name it by its transformers path.
 */
final class T5Walker {
  static final String MODEL_CLASS = "T5EncoderModel";

  private T5Walker() {}

  /**
   * The encoder's Linear layers, keyed in {@code component}.
   *
   * @throws IllegalArgumentException when the config is not a T5 encoder or lacks a size
   */
  static ImmutableList<ModuleSpec> walk(Component component, ModelConfig config) {
    if (!config.modelClass().equals(MODEL_CLASS)) {
      throw new IllegalArgumentException(
          config.source() + ": the model class is '" + config.modelClass() + "', expected '" + MODEL_CLASS + "'");
    }
    int model = config.positive("d_model");
    int feedForward = config.positive("d_ff");
    int inner = config.positive("num_heads") * config.positive("d_kv");
    int blocks = config.positive("num_layers");
    boolean gated = config.string("feed_forward_proj", "relu").startsWith("gated-");
    ImmutableList.Builder<ModuleSpec> specs = ImmutableList.builder();
    for (int block = 0; block < blocks; block++) {
      String attention = "encoder.block." + block + ".layer.0.SelfAttention.";
      for (String projection : new String[] {"q", "k", "v"}) {
        specs.add(linear(component, attention + projection, model, inner));
      }
      specs.add(linear(component, attention + "o", inner, model));
      String dense = "encoder.block." + block + ".layer.1.DenseReluDense.";
      for (String in : gated ? new String[] {"wi_0", "wi_1"} : new String[] {"wi"}) {
        specs.add(linear(component, dense + in, model, feedForward));
      }
      specs.add(linear(component, dense + "wo", feedForward, model));
    }
    return specs.build();
  }

  private static ModuleSpec linear(Component component, String path, long in, long out) {
    return new ModuleSpec(
        ModuleKey.of(component, path), LoraModule.Kind.LINEAR, in, out, 1, Optional.of(BlockIds.TEXT_ENCODERS), Optional.empty());
  }
}

package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableList;
import dev.loramerge.Component;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.ModuleSpec;
import java.util.Optional;

/**
 * Lists the Linear layers of a transformers {@code CLIPTextModel} or {@code
 * CLIPTextModelWithProjection} from its {@code config.json}: per encoder layer the self-attention
 * {@code q/k/v/out_proj} ({@code hidden_size} square) and the MLP {@code fc1} / {@code fc2}
 * ({@code hidden_size} ↔ {@code intermediate_size}), plus {@code text_projection} ({@code
 * hidden_size} → {@code projection_dim}, no bias) for the model with a projection. Embeddings and
 * layer norms are not Linear layers and are not listed.
 *
 * <p>Every module is in LBW block {@code BASE}, and has no original path: both kohya and
 * diffusers name text-encoder modules by their transformers paths.
 */
final class ClipTextWalker {
  private static final String TEXT_MODEL = "CLIPTextModel";
  private static final String WITH_PROJECTION = "CLIPTextModelWithProjection";

  private ClipTextWalker() {}

  /** Whether {@code modelClass} is one of the classes this walk reads. */
  static boolean reads(String modelClass) {
    return modelClass.equals(TEXT_MODEL) || modelClass.equals(WITH_PROJECTION);
  }

  /**
   * The text encoder's Linear layers, keyed in {@code component}.
   *
   * @throws IllegalArgumentException when the config is not a CLIP text model or lacks a size
   */
  static ImmutableList<ModuleSpec> walk(Component component, ModelConfig config) {
    String modelClass = config.modelClass();
    if (!reads(modelClass)) {
      throw new IllegalArgumentException(
          config.source()
              + ": the model class is '"
              + modelClass
              + "', expected '"
              + TEXT_MODEL
              + "' or '"
              + WITH_PROJECTION
              + "'");
    }
    int hidden = config.positive("hidden_size");
    int intermediate = config.positive("intermediate_size");
    int layers = config.positive("num_hidden_layers");
    ImmutableList.Builder<ModuleSpec> specs = ImmutableList.builder();
    for (int layer = 0; layer < layers; layer++) {
      String prefix = "text_model.encoder.layers." + layer + ".";
      for (String projection : new String[] {"q_proj", "k_proj", "v_proj", "out_proj"}) {
        specs.add(linear(component, prefix + "self_attn." + projection, hidden, hidden));
      }
      specs.add(linear(component, prefix + "mlp.fc1", hidden, intermediate));
      specs.add(linear(component, prefix + "mlp.fc2", intermediate, hidden));
    }
    if (modelClass.equals(WITH_PROJECTION)) {
      // Top level, not under text_model: CLIPTextModelWithProjection holds it beside the encoder.
      specs.add(linear(component, "text_projection", hidden, config.positive("projection_dim")));
    }
    return specs.build();
  }

  private static ModuleSpec linear(Component component, String path, long in, long out) {
    return new ModuleSpec(
        ModuleKey.of(component, path),
        LoraModule.Kind.LINEAR,
        in,
        out,
        1,
        Optional.of(BlockIds.TEXT_ENCODERS),
        Optional.empty());
  }
}

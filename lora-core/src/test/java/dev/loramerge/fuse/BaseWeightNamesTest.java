package dev.loramerge.fuse;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.Component;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.Architecture;
import java.util.Optional;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Where a module's base weight is found: diffusers files, pipelines and original checkpoints. */
class BaseWeightNamesTest {
  private static final ModuleKey SDXL_TO_Q =
      ModuleKey.of(Component.UNET, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q");
  private static final ModuleKey TE_Q =
      ModuleKey.of(Component.TEXT_ENCODER, "text_model.encoder.layers.0.self_attn.q_proj");

  @Test
  void findsDiffusersAndPipelineNames() {
    assertThat(BaseWeightNames.resolve(SDXL_TO_Q, Optional.empty(), Set.of(SDXL_TO_Q.path() + ".weight")))
        .contains(SDXL_TO_Q.path() + ".weight");
    assertThat(BaseWeightNames.resolve(SDXL_TO_Q, Optional.empty(), Set.of("unet." + SDXL_TO_Q.path() + ".weight")))
        .contains("unet." + SDXL_TO_Q.path() + ".weight");
  }

  @Test
  void findsTheOriginalCheckpointNameThroughTheArchitecture() {
    String original = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight";
    assertThat(BaseWeightNames.resolve(SDXL_TO_Q, Optional.of(Architecture.sdxl()), Set.of(original))).contains(original);
    assertThat(BaseWeightNames.resolve(SDXL_TO_Q, Optional.empty(), Set.of(original)))
        .as("without an architecture the original name is unknown")
        .isEmpty();
  }

  @Test
  void findsTextEncoderWeightsInSingleFileCheckpoints() {
    String sd15 = "cond_stage_model.transformer." + TE_Q.path() + ".weight";
    String sdxl = "conditioner.embedders.0.transformer." + TE_Q.path() + ".weight";
    assertThat(BaseWeightNames.resolve(TE_Q, Optional.of(Architecture.sd15()), Set.of(sd15))).contains(sd15);
    assertThat(BaseWeightNames.resolve(TE_Q, Optional.of(Architecture.sdxl()), Set.of(sdxl))).contains(sdxl);
    assertThat(BaseWeightNames.resolve(TE_Q, Optional.empty(), Set.of("text_encoder." + TE_Q.path() + ".weight")))
        .contains("text_encoder." + TE_Q.path() + ".weight");
  }
}

package dev.loramerge.arch;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * {@link Architecture#detect} with the file's metadata: a name only chooses among the
 * architectures whose modules and shapes the adapter fits.
 *
 * <p>The metadata values are those kohya-ss/sd-scripts writes: {@code library/sai_model_spec.py}
 * ({@code ARCH_SD_V1 = "stable-diffusion-v1"}, {@code ARCH_SD_V2_768_V =
 * "stable-diffusion-v2-768-v"}, {@code ARCH_SD_XL_V1_BASE = "stable-diffusion-xl-v1-base"},
 * {@code ARCH_SD3_M = "stable-diffusion-3"} followed by the model type, {@code ARCH_FLUX_1_DEV =
 * "flux-1-dev"}, each with {@code "/lora"} appended by {@code determine_architecture}); {@code
 * library/model_util.py get_model_version_str_for_sd1_sd2} ({@code "sd_v1"}, {@code "sd_v2"},
 * {@code "_v"} appended for v-parameterization) and {@code library/sdxl_model_util.py
 * MODEL_VERSION_SDXL_BASE_V1_0 = "sdxl_base_v1-0"}, written as {@code ss_base_model_version} by
 * {@code train_network.py}, beside {@code ss_v2}.
 */
class ArchitectureDetectionTest {
  /** SDXL's input_blocks.4.1 self-attention, which is SD1.5's down_blocks.1 too: [640, 640] in both. */
  private static final ModuleKey ATTN1_Q =
      ModuleKey.of(Component.UNET, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q");
  /** CLIP ViT-L/14's first query projection: SD1.5's text encoder and SDXL's first, [768, 768]. */
  private static final ModuleKey TE_Q =
      ModuleKey.of(Component.TEXT_ENCODER, "text_model.encoder.layers.0.self_attn.q_proj");
  /** SD1.5's cross-attention key in down_blocks.0: [320, 768]; SDXL's down_blocks.0 has no attention. */
  private static final ModuleKey SD15_ATTN2_K =
      ModuleKey.of(Component.UNET, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k");

  private static LoraModule module(ModuleKey key, long out, long in, Random random) {
    return LoraModule.of(key, gaussian(random, 4, in), gaussian(random, out, 4), 4);
  }

  private static TensorData gaussian(Random random, long rows, long columns) {
    double[] values = new double[Math.toIntExact(rows * columns)];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.F32, rows, columns);
  }

  private static LoraAdapter smallSdxl(Map<String, String> metadata) {
    Random random = new Random(5);
    return LoraAdapter.builder()
        .name("small")
        .add(module(ATTN1_Q, 640, 640, random))
        .add(module(TE_Q, 768, 768, random))
        .putAllMetadata(metadata)
        .build();
  }

  @Test
  void aSmallSdxlLoraFitsSd15AndSdxlAndWithoutMetadataIsTakenForSd15() {
    LoraAdapter adapter = smallSdxl(Map.of());
    assertThat(Architecture.fitting(adapter)).as("both fit its shapes").startsWith(Architecture.sd15(), Architecture.sdxl());
    assertThat(Architecture.detect(adapter)).as("shapes alone: the first that fits").contains(Architecture.sd15());
  }

  @Test
  void kohyasBaseModelVersionOrTheModelSpecMakesItSdxl() {
    assertThat(Architecture.detect(smallSdxl(Map.of("ss_base_model_version", "sdxl_base_v1-0"))))
        .as("ss_base_model_version").contains(Architecture.sdxl());
    assertThat(Architecture.detect(smallSdxl(Map.of("modelspec.architecture", "stable-diffusion-xl-v1-base/lora"))))
        .as("modelspec.architecture").contains(Architecture.sdxl());
    assertThat(Architecture.detect(smallSdxl(Map.of(Architecture.METADATA_KEY, "sdxl"))))
        .as("the library's own record").contains(Architecture.sdxl());
  }

  @Test
  void sd15MetadataOrNoneKeepsSd15() {
    assertThat(Architecture.detect(smallSdxl(Map.of("ss_base_model_version", "sd_v1", "ss_v2", "False"))))
        .contains(Architecture.sd15());
    assertThat(Architecture.detect(smallSdxl(Map.of("modelspec.architecture", "stable-diffusion-v1/lora"))))
        .contains(Architecture.sd15());
  }

  @Test
  void aSelfAttentionOnlySd2LoraIsSd2WhenItsMetadataSaysV2() {
    Random random = new Random(6);
    LoraAdapter bare = LoraAdapter.builder().name("sd2-attn1").add(module(ATTN1_Q, 640, 640, random)).build();
    assertThat(Architecture.fitting(bare)).contains(Architecture.sd15(), Architecture.sd2());
    assertThat(Architecture.detect(bare)).contains(Architecture.sd15());
    for (Map<String, String> metadata : List.of(
        Map.of("ss_v2", "True"),
        Map.of("ss_base_model_version", "sd_v2_v"),
        Map.of("modelspec.architecture", "stable-diffusion-v2-768-v/lora"),
        Map.of("modelspec.architecture", "stable-diffusion-v2-512/lora"))) {
      assertThat(Architecture.detect(bare.toBuilder().putAllMetadata(metadata).build())).as("%s", metadata).contains(Architecture.sd2());
    }
  }

  @Test
  void metadataNamingAnArchitectureTheShapesDoNotFitFallsBackToTheShapes() {
    Random random = new Random(7);
    LoraAdapter sd15 = LoraAdapter.builder()
        .name("sd15-cross-attention")
        .add(module(SD15_ATTN2_K, 320, 768, random))
        .putMetadata("ss_base_model_version", "sdxl_base_v1-0")
        .build();
    assertThat(Architecture.fitting(sd15)).doesNotContain(Architecture.sdxl());
    assertThat(Architecture.detect(sd15)).contains(Architecture.sd15());
  }

  @Test
  void namesTheArchitecturesTheMetadataSays() {
    assertThat(Architecture.namedBy(Map.of("modelspec.architecture", "stable-diffusion-3-large/lora"))).containsExactly(Architecture.sd35Large());
    assertThat(Architecture.namedBy(Map.of("modelspec.architecture", "stable-diffusion-3-medium/lora"))).containsExactly(Architecture.sd35Medium());
    assertThat(Architecture.namedBy(Map.of("modelspec.architecture", "stable-diffusion-3/lora")))
        .containsExactly(Architecture.sd35Medium(), Architecture.sd35Large());
    assertThat(Architecture.namedBy(Map.of("modelspec.architecture", "flux-1-dev/lora"))).containsExactly(Architecture.flux());
    assertThat(Architecture.namedBy(Map.of("ss_base_model_version", "flux1"))).containsExactly(Architecture.flux());
    assertThat(Architecture.namedBy(Map.of("modelspec.architecture", "lumina-2/lora"))).as("a model this library does not know").isEmpty();
    assertThat(Architecture.namedBy(Map.of("ss_v2", "False"))).isEmpty();
    // The library's own record outranks the file's older statements.
    assertThat(Architecture.namedBy(ImmutableMap.of("ss_base_model_version", "sd_v1", Architecture.METADATA_KEY, "sdxl")))
        .containsExactly(Architecture.sdxl());
  }
}

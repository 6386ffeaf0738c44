package dev.loramerge.arch;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.internal.arch.ParameterTally;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/**
 * The text encoders of Flux.1 and SD3.5: T5 v1.1 XXL ({@code T5EncoderModel}, Flux's {@code
 * text_encoder_2}, SD3's {@code text_encoder_3}) and SD3's CLIP-L / CLIP-G, both {@code
 * CLIPTextModelWithProjection}. kohya names from sd-scripts: {@code networks/lora_flux.py}
 * ({@code LORA_PREFIX_TEXT_ENCODER_CLIP = "lora_te1"}, {@code LORA_PREFIX_TEXT_ENCODER_T5 =
 * "lora_te3"}; module names are the prefix plus the T5EncoderModel path with {@code .} as {@code
 * _}, as its {@code merge_to_flux_model} builds them from {@code t5xxl_fp16.safetensors}' keys)
 * and {@code networks/lora_sd3.py} ({@code lora_te1}, {@code lora_te2}, {@code lora_te3}).
 * OneTrainer's Flux T5 prefix {@code lora_te2_} is the one ComfyUI's {@code comfy/lora.py} maps
 * beside {@code lora_te3_} ("OneTrainer Flux").
 */
class TextEncodersTest {
  private static long[] shape(String text) {
    return Arrays.stream(text.split(" ")).mapToLong(Long::parseLong).toArray();
  }

  @ParameterizedTest
  @CsvSource({
    "flux,        text_encoder_2, encoder.block.0.layer.0.SelfAttention.q,        4096 4096,  lora_te3_encoder_block_0_layer_0_SelfAttention_q",
    "flux,        text_encoder_2, encoder.block.23.layer.0.SelfAttention.o,       4096 4096,  lora_te3_encoder_block_23_layer_0_SelfAttention_o",
    "flux,        text_encoder_2, encoder.block.5.layer.1.DenseReluDense.wi_0,    10240 4096, lora_te3_encoder_block_5_layer_1_DenseReluDense_wi_0",
    "flux,        text_encoder_2, encoder.block.5.layer.1.DenseReluDense.wi_1,    10240 4096, lora_te3_encoder_block_5_layer_1_DenseReluDense_wi_1",
    "flux,        text_encoder_2, encoder.block.5.layer.1.DenseReluDense.wo,      4096 10240, lora_te3_encoder_block_5_layer_1_DenseReluDense_wo",
    "flux,        text_encoder,   text_model.encoder.layers.11.mlp.fc2,           768 3072,   lora_te1_text_model_encoder_layers_11_mlp_fc2",
    "sd35-medium, text_encoder_3, encoder.block.0.layer.0.SelfAttention.k,        4096 4096,  lora_te3_encoder_block_0_layer_0_SelfAttention_k",
    "sd35-large,  text_encoder_3, encoder.block.23.layer.1.DenseReluDense.wo,     4096 10240, lora_te3_encoder_block_23_layer_1_DenseReluDense_wo",
    "sd35-medium, text_encoder,   text_model.encoder.layers.0.self_attn.q_proj,   768 768,    lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "sd35-medium, text_encoder,   text_projection,                                768 768,    lora_te1_text_projection",
    "sd35-large,  text_encoder_2, text_model.encoder.layers.31.mlp.fc1,           5120 1280,  lora_te2_text_model_encoder_layers_31_mlp_fc1",
    "sd35-large,  text_encoder_2, text_projection,                                1280 1280,  lora_te2_text_projection",
  })
  void modulesHaveTheirShapeAndKohyaName(String id, String component, String path, String shape, String kohya) {
    Architecture architecture = Architecture.byId(id).orElseThrow();
    ModuleKey key = ModuleKey.of(Component.fromPrefix(component).orElseThrow(), path);
    ModuleSpec spec = architecture.module(key).orElseThrow(() -> new AssertionError(key + " is not a module of " + id));
    assertThat(spec.weightShape()).as(path).containsExactly(shape(shape));
    assertThat(spec.blockId()).as("text encoders are LBW's BASE").contains("BASE");
    assertThat(spec.originalPath()).isEmpty();
    assertThat(architecture.kohyaName(key)).isEqualTo(kohya);
    assertThat(architecture.resolveKohyaName(kohya)).contains(key);
  }

  @Test
  void fluxReadsOneTrainersT5PrefixButWritesKohyas() {
    Architecture flux = Architecture.flux();
    ModuleKey key = ModuleKey.parse("text_encoder_2.encoder.block.7.layer.0.SelfAttention.v");
    assertThat(flux.resolveKohyaName("lora_te2_encoder_block_7_layer_0_SelfAttention_v")).contains(key);
    assertThat(flux.kohyaName(key)).isEqualTo("lora_te3_encoder_block_7_layer_0_SelfAttention_v");
    // SD3's lora_te2_ is CLIP-G; a T5 path under it is no module there.
    assertThat(Architecture.sd35Medium().resolveKohyaName("lora_te2_encoder_block_7_layer_0_SelfAttention_v")).isEmpty();
  }

  @ParameterizedTest
  @CsvSource({"flux, text_encoder_2", "sd35-medium, text_encoder_3", "sd35-large, text_encoder_3"})
  void t5HasSevenLinearLayersInEachOfItsTwentyFourBlocks(String id, String component) {
    Architecture architecture = Architecture.byId(id).orElseThrow();
    Component t5 = Component.fromPrefix(component).orElseThrow();
    List<ModuleSpec> specs =
        architecture.modules().values().stream().filter(spec -> spec.key().component() == t5).toList();
    assertThat(specs).hasSize(24 * 7);
    assertThat(architecture.module(ModuleKey.of(t5, "encoder.block.24.layer.0.SelfAttention.q"))).isEmpty();
    assertThat(architecture.module(ModuleKey.of(t5, "encoder.block.0.layer.1.DenseReluDense.wi"))).as("v1.1 is gated").isEmpty();
  }

  @Test
  void t5WeightsAddUpToTheEncodersParameterCount() {
    // T5EncoderModel of google/t5-v1_1-xxl: the listed weights (no biases), two RMS norm weights
    // per block and a final one (d_model each), the shared embedding (vocab_size 32128 × 4096)
    // and block 0's relative-attention bias (32 buckets × 64 heads): 4,762,310,656 parameters.
    // t5xxl_fp16.safetensors holds these plus encoder.embed_tokens, a second copy of the
    // embedding: 4,893,906,944 values, 9.79 GB in fp16.
    long total = 0;
    for (ModuleSpec spec : Architecture.flux().modules().values()) {
      if (spec.key().component() == Component.TEXT_ENCODER_2) {
        total += spec.inFeatures() * spec.outFeatures();
        if (spec.key().path().endsWith(".SelfAttention.q") || spec.key().path().endsWith(".DenseReluDense.wi_0")) {
          total += spec.inFeatures();
        }
      }
    }
    total += 4096 + 32128L * 4096 + 32 * 64;
    assertThat(total).isEqualTo(4_762_310_656L);
  }

  @ParameterizedTest
  @CsvSource({
    // CLIP ViT-L/14 with its 768 × 768 projection (transformers' CLIPTextModelWithProjection):
    // SD1.5's 123,060,480 plus 589,824; OpenCLIP bigG with projection as in SDXL.
    "sd35-medium, TEXT_ENCODER,   123650304",
    "sd35-large,  TEXT_ENCODER,   123650304",
    "sd35-medium, TEXT_ENCODER_2, 694659840",
    "sd35-large,  TEXT_ENCODER_2, 694659840",
  })
  void sd3ClipEncodersAddUpToTheirParameterCount(String id, Component component, long published) {
    assertThat(ParameterTally.total(Architecture.byId(id).orElseThrow(), component)).isEqualTo(published);
  }

  @Test
  void detectionTellsFluxT5FromSd3ByTheOtherEncoders() {
    LoraAdapter fluxT5 = adapter(ModuleKey.parse("text_encoder_2.encoder.block.0.layer.0.SelfAttention.q"), 4096, 4096);
    assertThat(Architecture.detect(fluxT5)).contains(Architecture.flux());
    LoraAdapter sd3T5 = adapter(ModuleKey.parse("text_encoder_3.encoder.block.0.layer.0.SelfAttention.q"), 4096, 4096);
    assertThat(Architecture.detect(sd3T5)).contains(Architecture.sd35Medium());
    LoraAdapter sd3ClipG = adapter(ModuleKey.parse("text_encoder_2.text_model.encoder.layers.0.mlp.fc1"), 5120, 1280);
    assertThat(Architecture.detect(sd3ClipG))
        .as("SDXL's text encoder 2 is the same OpenCLIP bigG, and SDXL comes first")
        .contains(Architecture.sdxl());
  }

  private static LoraAdapter adapter(ModuleKey key, long out, long in) {
    TensorData down = TensorData.ofDoubles(new double[Math.toIntExact(2 * in)], DType.F32, 2, in);
    TensorData up = TensorData.ofDoubles(new double[Math.toIntExact(2 * out)], DType.F32, out, 2);
    return LoraAdapter.builder().add(LoraModule.of(key, down, up, 2)).build();
  }

  @Test
  void sd3BlockIdsNowStartWithTheTextEncoders() {
    assertThat(Architecture.sd35Medium().blockIds()).first().isEqualTo("BASE");
    assertThat(Architecture.sd35Medium().blockIds()).hasSize(1 + 24);
    assertThat(Optional.of(Architecture.sd35Large().loraBlockIds().get(0))).contains("BASE");
  }
}

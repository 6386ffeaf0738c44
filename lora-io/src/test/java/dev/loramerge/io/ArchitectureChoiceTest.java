package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The architecture {@link LoraFiles#readFile} takes a file for, through the API: the read
 * options' architecture, the metadata and kohya's naming dialect, each only among the
 * architectures the shapes fit.
 *
 * <p>kohya-ss/sd-scripts {@code networks/lora.py} names SDXL's text encoders {@code lora_te1_} /
 * {@code lora_te2_} and SD1.x/2.x's {@code lora_te_}; SDXL's UNet modules are {@code
 * library/sdxl_original_unet.py}'s ({@code input_blocks.4.1…}); {@code networks/lora_flux.py}
 * names Flux's CLIP-L {@code lora_te1_} too, beside {@code lora_unet_double_blocks_…}.
 */
class ArchitectureChoiceTest {
  private static final String SDXL_ATTN1 = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q";
  private static final String TE1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj";
  private static final String TE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
  private static final String FLUX_PROJ = "lora_unet_double_blocks_0_img_attn_proj";

  @TempDir Path folder;

  private Path kohya(String file, Map<String, String> metadata, Map<String, long[]> modules) throws IOException {
    Random random = new Random(file.hashCode());
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    modules.forEach((name, shape) -> {
      tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.F32));
      tensors.put(name + ".lora_down.weight", gaussian(random, 4, shape[1]));
      tensors.put(name + ".lora_up.weight", gaussian(random, shape[0], 4));
    });
    Path path = folder.resolve(file);
    Safetensors.write(path, tensors, metadata);
    return path;
  }

  private static TensorData gaussian(Random random, long rows, long columns) {
    double[] values = new double[Math.toIntExact(rows * columns)];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.F32, rows, columns);
  }

  private static Map<String, long[]> modules(Object... nameAndShape) {
    Map<String, long[]> modules = new LinkedHashMap<>();
    for (int i = 0; i < nameAndShape.length; i += 2) {
      modules.put((String) nameAndShape[i], (long[]) nameAndShape[i + 1]);
    }
    return modules;
  }

  @Test
  void kohyasSdxlDialectIsRecordedSoThatDetectAndTheKohyaWriterAgree() throws IOException {
    Path path = kohya("small-sdxl.safetensors", Map.of(), modules(SDXL_ATTN1, new long[] {640, 640}, TE1, new long[] {768, 768}));
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, LoraReadOptions.defaults());
    assertThat(file.architecture().architecture()).contains(Architecture.sdxl());
    assertThat(file.architecture().reason()).hasValueSatisfying(reason -> assertThat(reason).contains("lora_te1_").contains("SD1.5"));
    assertThat(file.architecture().warnings()).isEmpty();
    assertThat(file.architecture().recorded()).isTrue();
    assertThat(file.adapter().metadata()).containsEntry(Architecture.METADATA_KEY, "sdxl");
    assertThat(Architecture.detect(file.adapter())).contains(Architecture.sdxl());

    LoraAdapter read = LoraFiles.read(path);
    Path written = folder.resolve("written.safetensors");
    LoraFiles.write(read, written, LoraFormat.KOHYA);
    assertThat(LoraFiles.readFile(written, LoraReadOptions.defaults()).moduleNames().values()).containsExactlyInAnyOrder(SDXL_ATTN1, TE1);
  }

  @Test
  void theReadOptionsArchitectureIsTheApisArchitectureFlag() throws IOException {
    Path path = kohya("sd2-attn1.safetensors", Map.of(),
        modules("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", new long[] {640, 640}));
    assertThat(LoraFiles.readFile(path, LoraReadOptions.defaults()).architecture().architecture()).contains(Architecture.sd15());
    LoraFiles.AdapterFile given = LoraFiles.readFile(path, LoraReadOptions.builder().architecture(Architecture.sd2()).build());
    assertThat(given.architecture().architecture()).contains(Architecture.sd2());
    assertThat(Architecture.detect(given.adapter())).contains(Architecture.sd2());
  }

  @Test
  void metadataThatAlreadySaysItIsNotRecordedAgain() throws IOException {
    Path path = kohya("stated.safetensors", Map.of("ss_base_model_version", "sdxl_base_v1-0"),
        modules(SDXL_ATTN1, new long[] {640, 640}, TE1, new long[] {768, 768}));
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, LoraReadOptions.defaults());
    assertThat(file.architecture().architecture()).contains(Architecture.sdxl());
    assertThat(file.architecture().reason()).hasValueSatisfying(reason -> assertThat(reason).contains("ss_base_model_version"));
    assertThat(file.architecture().recorded()).isFalse();
    assertThat(file.adapter().metadata()).doesNotContainKey(Architecture.METADATA_KEY);
  }

  @Test
  void fluxsLoraTe1IsNoSdxlHintTheShapesContradict() throws IOException {
    Path path = kohya("flux.safetensors", Map.of(), modules(FLUX_PROJ, new long[] {3072, 3072}, TE1, new long[] {768, 768}));
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, LoraReadOptions.defaults());
    assertThat(file.architecture().architecture()).contains(Architecture.flux());
    assertThat(file.architecture().warnings()).as("lora_te1_ is Flux's CLIP-L too").isEmpty();
    assertThat(file.architecture().reason()).isEmpty();
    assertThat(file.architecture().recorded()).isFalse();
  }

  @Test
  void mixedDialectsSayNothing() throws IOException {
    Path path = kohya("mixed.safetensors", Map.of(), modules(SDXL_ATTN1, new long[] {640, 640}, TE, new long[] {768, 768}));
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, LoraReadOptions.defaults());
    assertThat(file.architecture().architecture()).contains(Architecture.sd15());
    assertThat(file.architecture().warnings()).isEmpty();
    assertThat(file.architecture().recorded()).isFalse();
  }
}

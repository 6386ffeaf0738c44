package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Which architecture {@code inspect}, {@code convert} and {@code fuse} take a LoRA for when its
 * shapes fit more than one: a small SDXL LoRA on {@code input_blocks.4.1}'s self-attention
 * ([640, 640]) and CLIP ViT-L's first query ([768, 768]) has SD1.5's shapes too, and an SD2.x LoRA
 * on self-attention only has SD1.5's.
 *
 * <p>Names as kohya-ss/sd-scripts writes them: {@code networks/lora.py} prefixes SDXL's text
 * encoders {@code lora_te1_} / {@code lora_te2_} and SD1.x/2.x's one {@code lora_te_}; SDXL's UNet
 * is {@code library/sdxl_original_unet.py}'s, so its modules are {@code input_blocks.4.1…}, SD1.5's
 * diffusers' {@code down_blocks.1.attentions.0…}. Metadata as it writes it: {@code
 * ss_base_model_version} ({@code "sdxl_base_v1-0"} from {@code library/sdxl_model_util.py}, {@code
 * "sd_v1"} from {@code library/model_util.py}), {@code ss_v2}, and the SAI model spec's {@code
 * modelspec.architecture} ({@code library/sai_model_spec.py}: {@code
 * "stable-diffusion-xl-v1-base/lora"}). An SDXL single file names CLIP ViT-L {@code
 * conditioner.embedders.0.transformer.…} and the UNet {@code model.diffusion_model.…}
 * (Stability's {@code sd_xl_base_1.0.safetensors}).
 */
class ArchitectureDetectionCommandTest {
  private static final int RANK = 4;
  private static final String SDXL_ATTN1 = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q";
  private static final String SDXL_TE1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj";
  private static final String SD15_ATTN1 = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q";
  private static final String SD15_TE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
  /** SD1.5's cross-attention key in down_blocks.0, [320, 768]: SDXL's down_blocks.0 has no attention. */
  private static final String SD15_ATTN2_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
  /** SD1.5's cross-attention key in down_blocks.1, [640, 768]; SDXL's is [640, 2048]. */
  private static final String SD15_ATTN2_K_1 = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k";
  private static final String BASE_ATTN1 = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight";
  private static final String BASE_TE1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight";

  @TempDir Path temp;

  private final CommandRun command = CommandRun.clearingBeforeEachRun();

  private static TensorData gaussian(Random random, long rows, long columns) {
    double[] values = new double[Math.toIntExact(rows * columns)];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.F32, rows, columns);
  }

  /** A kohya module of rank 4 with alpha 8 (scale 2). */
  private static void kohya(Map<String, TensorData> tensors, Random random, String name, long out, long in) {
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {8}, DType.F32));
    tensors.put(name + ".lora_down.weight", gaussian(random, RANK, in));
    tensors.put(name + ".lora_up.weight", gaussian(random, out, RANK));
  }

  private Path kohyaFile(String file, Map<String, String> metadata, String... modules) throws IOException {
    Random random = new Random(file.hashCode());
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String module : modules) {
      long out = module.contains("_te") ? 768 : module.equals(SD15_ATTN2_K) ? 320 : 640;
      long in = module.contains("_te") || module.contains("attn2") ? 768 : 640;
      kohya(tensors, random, module, out, in);
    }
    Path path = temp.resolve(file);
    Safetensors.write(path, tensors, metadata);
    return path;
  }

  private String inspect(Path file, String... options) {
    String[] args = new String[options.length + 2];
    args[0] = "inspect";
    System.arraycopy(options, 0, args, 1, options.length);
    args[args.length - 1] = file.toString();
    assertThat(command.run(args)).as("inspect %s; stderr: %s", file, command.err()).isZero();
    return command.out();
  }

  private static List<String> moduleNames(Path file) throws IOException {
    try (SafetensorsFile read = SafetensorsFile.open(file)) {
      return read.tensors().stream().map(TensorSpec::name).filter(name -> name.endsWith(".lora_down.weight"))
          .map(name -> name.substring(0, name.length() - ".lora_down.weight".length())).sorted().collect(Collectors.toList());
    }
  }

  @Test
  void kohyasSdxlNamesMakeASmallLoraSdxlInInspectAndConvert() throws IOException {
    Path lora = kohyaFile("small-sdxl.safetensors", Map.of(), SDXL_ATTN1, SDXL_TE1);
    assertThat(inspect(lora))
        .containsPattern("architecture +SDXL \\(from kohya's names \\(lora_te1_…, lora_unet_input_blocks_…\\); the shapes fit SD1\\.5 too\\)\\n")
        .contains("blocks        2 of 20")
        .contains(Architecture.METADATA_KEY + " = sdxl  (recorded on reading, not in the file)")
        .doesNotContain("warning");

    Path kohya = temp.resolve("converted.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), lora.toString())).as("stderr: %s", command.err()).isZero();
    assertThat(moduleNames(kohya)).as("SDXL's kohya names, not SD1.5's").containsExactly(SDXL_TE1, SDXL_ATTN1);

    // diffusers names are the same for both: the recorded architecture carries it through.
    Path diffusers = temp.resolve("converted-diffusers.safetensors");
    assertThat(command.run("convert", "--to", "diffusers", "-o", diffusers.toString(), lora.toString()))
        .as("stderr: %s", command.err()).isZero();
    assertThat(inspect(diffusers))
        .containsPattern("architecture +SDXL \\(from metadata " + Architecture.METADATA_KEY + " = sdxl; the shapes fit SD1\\.5 too\\)\\n").contains(Architecture.METADATA_KEY + " = sdxl\n");
  }

  @Test
  void aMergeOfSmallSdxlLorasKeepsSdxlsNames() throws IOException {
    Path first = kohyaFile("first-sdxl.safetensors", Map.of(), SDXL_ATTN1, SDXL_TE1);
    Path second = kohyaFile("second-sdxl.safetensors", Map.of("ss_base_model_version", "sdxl_base_v1-0"), SDXL_ATTN1);
    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "--format", "kohya", "-o", merged.toString(), first + "=0.5", second + "=0.5"))
        .as("stderr: %s", command.err()).isZero();
    assertThat(moduleNames(merged)).containsExactly(SDXL_TE1, SDXL_ATTN1);
    assertThat(inspect(merged)).containsPattern("architecture +SDXL ");
  }

  @Test
  void sd15NamesAndMetadataOrNoneStaySd15() throws IOException {
    Path bare = kohyaFile("sd15.safetensors", Map.of(), SD15_ATTN1, SD15_TE);
    assertThat(inspect(bare)).containsPattern("architecture +SD1\\.5\\n").contains("metadata      (none)").doesNotContain("warning");
    Path stated = kohyaFile("sd15-stated.safetensors", Map.of("ss_base_model_version", "sd_v1", "ss_v2", "False"), SD15_ATTN1, SD15_TE);
    assertThat(inspect(stated)).containsPattern("architecture +SD1\\.5\\n").doesNotContain("warning");
    Path kohya = temp.resolve("sd15-converted.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), bare.toString())).as("stderr: %s", command.err()).isZero();
    assertThat(moduleNames(kohya)).containsExactly(SD15_TE, SD15_ATTN1);
  }

  @Test
  void kohyasBaseModelVersionOrTheModelSpecMakeItSdxl() throws IOException {
    // SD1.5's spelling of the UNet module, which converters write for SDXL too: only the metadata says.
    for (Map<String, String> metadata : List.of(
        Map.of("ss_base_model_version", "sdxl_base_v1-0"),
        Map.of("modelspec.architecture", "stable-diffusion-xl-v1-base/lora", "modelspec.sai_model_spec", "1.0.0"))) {
      Path lora = kohyaFile("stated-sdxl.safetensors", metadata, SD15_ATTN1);
      String key = metadata.containsKey("ss_base_model_version") ? "ss_base_model_version" : "modelspec.architecture";
      assertThat(inspect(lora))
          .as("%s", metadata)
          .containsPattern("architecture +SDXL \\(from metadata " + key + " = [^;]+; the shapes fit SD1\\.5 too\\)\\n")
          .doesNotContain("recorded on reading");
      Path kohya = temp.resolve("stated-converted.safetensors");
      assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), lora.toString())).as("stderr: %s", command.err()).isZero();
      assertThat(moduleNames(kohya)).containsExactly(SDXL_ATTN1);
    }
  }

  @Test
  void inspectAndConvertHonourTheArchitectureGiven() throws IOException {
    // diffusers names, the same for SD1.5 and SDXL, and no metadata: nothing in the file says.
    Random random = new Random(3);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String module : List.of(
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "text_encoder.text_model.encoder.layers.0.self_attn.q_proj")) {
      long width = module.startsWith("unet") ? 640 : 768;
      tensors.put(module + ".lora_A.weight", gaussian(random, RANK, width));
      tensors.put(module + ".lora_B.weight", gaussian(random, width, RANK));
    }
    Path lora = temp.resolve("unsaid.safetensors");
    Safetensors.write(lora, tensors, Map.of());
    assertThat(inspect(lora)).containsPattern("architecture +SD1\\.5\\n");
    assertThat(inspect(lora, "--architecture", "sdxl"))
        .containsPattern("architecture +SDXL \\(from the architecture given; the shapes fit SD1\\.5 too\\)\\n");

    Path kohya = temp.resolve("given.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), lora.toString())).as("stderr: %s", command.err()).isZero();
    assertThat(moduleNames(kohya)).as("without --architecture").containsExactly(SD15_TE, SD15_ATTN1);
    assertThat(command.run("convert", "--architecture", "sdxl", "--to", "kohya", "-o", kohya.toString(), lora.toString()))
        .as("stderr: %s", command.err()).isZero();
    assertThat(moduleNames(kohya)).containsExactly(SDXL_TE1, SDXL_ATTN1);
  }

  @Test
  void aHintTheShapesDoNotFitFallsBackToTheShapesWithAWarning() throws IOException {
    Path lora = kohyaFile(
        "mislabelled.safetensors", Map.of("ss_base_model_version", "sdxl_base_v1-0"), SD15_ATTN1, SD15_ATTN2_K);
    assertThat(inspect(lora))
        .containsPattern("architecture +SD1\\.5\\n")
        .containsPattern("warning +by metadata ss_base_model_version = sdxl_base_v1-0 the adapter is for SDXL, but .*"
            + "down_blocks\\.0\\.attentions\\.0\\.transformer_blocks\\.0\\.attn2\\.to_k.*; taken as SD1\\.5, which the shapes fit\\n");
    Path kohya = temp.resolve("mislabelled-converted.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), lora.toString())).as("stderr: %s", command.err()).isZero();
    assertThat(command.err()).contains("lora: warning: ").contains("taken as SD1.5");
    assertThat(moduleNames(kohya)).containsExactly(SD15_ATTN2_K, SD15_ATTN1);
    // merge and fuse read their inputs the same way, and say so too.
    Path merged = temp.resolve("mislabelled-merged.safetensors");
    assertThat(command.run("merge", "--format", "kohya", "-o", merged.toString(), lora + "=0.5")).as("stderr: %s", command.err()).isZero();
    assertThat(command.err()).as("merge's stderr").contains("lora: warning: " + lora + ": ").contains("taken as SD1.5");

    // An explicit architecture whose module the shapes do not fit is passed over the same way.
    Path crossAttention = kohyaFile("cross-attention.safetensors", Map.of(), SD15_ATTN1, SD15_ATTN2_K_1);
    assertThat(inspect(crossAttention, "--architecture", "sdxl"))
        .containsPattern("architecture +SD1\\.5\\n")
        .containsPattern("warning +by the architecture given the adapter is for SDXL, but module "
            + "'unet\\.down_blocks\\.1\\.attentions\\.0\\.transformer_blocks\\.0\\.attn2\\.to_k' updates a \\[640, 768\\] weight,"
            + " SDXL's is \\[640, 2048\\]; taken as SD1\\.5, which the shapes fit\\n");
  }

  @Test
  void aSelfAttentionOnlySd2LoraIsLabelledSd2WhenItsMetadataSaysV2() throws IOException {
    for (Map<String, String> metadata : List.of(
        Map.of("ss_v2", "True"), Map.of("ss_base_model_version", "sd_v2"),
        Map.of("modelspec.architecture", "stable-diffusion-v2-768-v/lora"))) {
      Path lora = kohyaFile("sd2-attn1.safetensors", metadata, SD15_ATTN1);
      assertThat(inspect(lora)).as("%s", metadata).containsPattern("architecture +SD2\\.x \\(from metadata [^;]+; the shapes fit SD1\\.5 or SDXL too\\)\\n");
    }
    Path unsaid = kohyaFile("sd2-unsaid.safetensors", Map.of(), SD15_ATTN1);
    assertThat(inspect(unsaid)).containsPattern("architecture +SD1\\.5\\n");
    assertThat(inspect(unsaid, "--architecture", "sd2")).containsPattern("architecture +SD2\\.x \\(from the architecture given");
  }

  @Test
  void fusesASmallSdxlLoraWithItsTextEncoderModuleIntoAnSdxlSingleFile() throws IOException {
    Path lora = kohyaFile("small-sdxl.safetensors", Map.of(), SDXL_ATTN1, SDXL_TE1);
    Random random = new Random(11);
    TensorData attn1 = gaussian(random, 640, 640);
    TensorData te1 = gaussian(random, 768, 768);
    Path base = temp.resolve("sd_xl_base_1.0.safetensors");
    Safetensors.write(base, Map.of(BASE_ATTN1, attn1, BASE_TE1, te1), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), lora + "=0.5"))
        .as("fuse; stderr: %s", command.err()).isZero();

    try (SafetensorsFile loraFile = SafetensorsFile.open(lora); SafetensorsFile fusedFile = SafetensorsFile.open(fused)) {
      assertFused(attn1, fusedFile.tensor(BASE_ATTN1), loraFile.tensor(SDXL_ATTN1 + ".lora_up.weight"),
          loraFile.tensor(SDXL_ATTN1 + ".lora_down.weight"), BASE_ATTN1);
      assertFused(te1, fusedFile.tensor(BASE_TE1), loraFile.tensor(SDXL_TE1 + ".lora_up.weight"),
          loraFile.tensor(SDXL_TE1 + ".lora_down.weight"), BASE_TE1);
    }
  }

  /** fused = base + 0.5 · 2 · up · down, each value the float64 sum rounded once to F32. */
  private static void assertFused(TensorData base, TensorData fused, TensorData up, TensorData down, String what) {
    long in = base.dim(1);
    for (long row = 0; row < base.dim(0); row += 37) {
      for (long column = 0; column < in; column += 41) {
        double update = 0;
        for (int k = 0; k < RANK; k++) {
          update += up.getDouble(row * RANK + k) * down.getDouble(k * in + column);
        }
        double exact = base.getDouble(row * in + column) + 0.5 * 2 * update;
        assertThat(fused.getDouble(row * in + column))
            .as("%s row %d column %d", what, row, column)
            .isCloseTo(exact, within(Math.ulp((float) exact) / 2 * (1 + 1e-9)));
      }
    }
  }
}

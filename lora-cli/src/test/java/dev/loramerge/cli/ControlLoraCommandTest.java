package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A BFL Flux.1 control LoRA (FLUX.1-Canny-dev-lora's names: {@code lora_A}/{@code lora_B}
 * factors and the attentions' norm scales {@code double_blocks.N.img_attn.norm.query_norm.scale}
 * … [128], bf16) through the command: inspect names the norms' kind, {@code replacement}; convert
 * writes them as diffusers' {@code transformer.transformer_blocks.N.attn.norm_q.weight} (diffusers
 * {@code _convert_bfl_flux_control_lora_to_diffusers}) and refuses kohya in one line; merge carries
 * identical replacements once and refuses different ones; fuse replaces the base's norm scales
 * ({@code comfy/lora.py}'s {@code "set"} patch, {@code weight.copy_}) and unfuse with the original
 * gives the base's bytes back.
 */
class ControlLoraCommandTest {
  private static final long INNER = 3072;
  private static final String[] NORMS = {
    "double_blocks.0.img_attn.norm.query_norm", "double_blocks.0.img_attn.norm.key_norm",
    "double_blocks.0.txt_attn.norm.query_norm", "double_blocks.0.txt_attn.norm.key_norm",
    "single_blocks.0.norm.query_norm", "single_blocks.0.norm.key_norm",
  };

  @TempDir Path temp;

  private final CommandRun command = CommandRun.clearingBeforeEachRun();

  private static TensorData gaussian(Random random, double mean, double sd, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = mean + sd * random.nextGaussian();
    }
    return TensorData.ofDoubles(values, DType.BF16, shape);
  }

  /** A control LoRA: a LoRA on {@code time_in.in_layer} ([3072, 256]) and the six norm scales of blocks 0. */
  private Path control(String name, long seed, Map<String, TensorData> tensors) throws IOException {
    Random random = new Random(seed);
    tensors.put("time_in.in_layer.lora_A.weight", gaussian(random, 0, 0.05, 4, 256));
    tensors.put("time_in.in_layer.lora_B.weight", gaussian(random, 0, 0.05, INNER, 4));
    for (String norm : NORMS) {
      tensors.put(norm + ".scale", gaussian(random, 1, 0.3, 128));
    }
    Path path = temp.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, Map.of());
    return path;
  }

  @Test
  void inspectConvertMergeFuseAndUnfuse() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    Path canny = control("canny", 1, tensors);

    assertThat(command.run("inspect", "--modules", canny.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out()).containsPattern("format +bfl\\n").containsPattern("architecture +Flux\\.1\\n")
        .containsPattern("kinds +.*replacement ×6")
        .containsPattern("transformer\\.transformer_blocks\\.0\\.attn\\.norm_q +double_blocks\\.0\\.img_attn\\.norm\\.query_norm"
            + " +replacement .* double_blocks\\.0\\n");

    Path kohya = temp.resolve("canny-kohya.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), canny.toString())).isEqualTo(LoraCommand.BAD_INPUT);
    assertThat(command.err()).contains("module 'transformer.single_transformer_blocks.0.attn.norm_k' is a replacement (its"
        + " tensor takes the base weight's place), which the kohya layout cannot hold; write it in the diffusers layout,"
        + " or fuse it");
    assertThat(kohya).doesNotExist();

    Path diffusers = temp.resolve("canny-diffusers.safetensors");
    assertThat(command.run("convert", "--to", "diffusers", "-o", diffusers.toString(), canny.toString()))
        .as("convert; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("transformer.transformer_blocks.0.attn.norm_q.weight"))
          .isEqualTo(tensors.get("double_blocks.0.img_attn.norm.query_norm.scale"));
      assertThat(file.tensor("transformer.single_transformer_blocks.0.attn.norm_k.weight"))
          .isEqualTo(tensors.get("single_blocks.0.norm.key_norm.scale"));
    }

    // The same control LoRA in two layouts: its replacements are carried once, in the diffusers
    // layout (the one that holds them) since the first input's is read only.
    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "-o", merged.toString(), canny + "=0.5", diffusers + "=0.5"))
        .as("merge; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(merged)) {
      assertThat(file.tensor("transformer.transformer_blocks.0.attn.norm_added_k.weight"))
          .isEqualTo(tensors.get("double_blocks.0.txt_attn.norm.key_norm.scale"));
    }
    Path depth = control("depth", 2, new LinkedHashMap<>());
    assertThat(command.run("merge", "-o", temp.resolve("refused.safetensors").toString(), canny + "=0.5", depth + "=0.5"))
        .isEqualTo(LoraCommand.BAD_INPUT);
    assertThat(command.err()).contains("module 'transformer.single_transformer_blocks.0.attn.norm_k' is replaced by different"
        + " tensors in adapters 'canny' and 'depth'");

    Random random = new Random(3);
    Map<String, TensorData> weights = new LinkedHashMap<>();
    weights.put("time_in.in_layer.weight", gaussian(random, 0, 0.05, INNER, 256));
    for (String norm : NORMS) {
      weights.put(norm + ".scale", gaussian(random, 1, 0.1, 128));
    }
    weights.put("img_in.weight", gaussian(random, 0, 0.05, INNER, 64));
    Path base = temp.resolve("flux1-dev.safetensors");
    Safetensors.write(base, weights, Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), canny + "=0.8"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 7 modules into");
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      for (String norm : NORMS) {
        assertThat(file.tensor(norm + ".scale")).as("%s: the bf16 replacement, not scaled by 0.8", norm)
            .isEqualTo(tensors.get(norm + ".scale"));
      }
    }
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), canny + "=0.8"))
        .as("unfuse; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).isEqualTo(Files.readAllBytes(base));
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", temp.resolve("subtracted.safetensors").toString(), canny + "=0.8"))
        .isEqualTo(LoraCommand.BAD_INPUT);
    assertThat(command.err()).contains("is a replacement, which cannot be subtracted");
  }

  /**
   * The control LoRA's {@code img_in} ([r, 128] down factor) widens the base's [3072, 64] weight as
   * diffusers' {@code _maybe_expand_transformer_param_shape_or_error_} does (zero columns, then
   * the LoRA): the fuse says so on stderr and in the recipe, its new columns hold the update
   * alone (rounded once to bf16), a subtraction is refused and a restore gives the base back.
   */
  @Test
  void fuseWidensImgInAndOnlyARestoreNarrowsItBack() throws IOException {
    Random random = new Random(4);
    Map<String, TensorData> lora = new LinkedHashMap<>();
    lora.put("img_in.lora_A.weight", gaussian(random, 0, 0.05, 4, 128));
    lora.put("img_in.lora_B.weight", gaussian(random, 0, 0.05, INNER, 4));
    lora.put("img_in.lora_B.bias", gaussian(random, 0, 0.05, INNER));
    Path canny = temp.resolve("canny-img-in.safetensors");
    Safetensors.write(canny, lora, Map.of());
    Map<String, TensorData> weights = new LinkedHashMap<>();
    weights.put("img_in.weight", gaussian(random, 0, 0.05, INNER, 64));
    weights.put("img_in.bias", gaussian(random, 0, 0.05, INNER));
    Path base = temp.resolve("flux1-dev.safetensors");
    Safetensors.write(base, weights, Map.of());

    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), canny + "=0.5"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.err()).contains("widened img_in.weight (transformer.x_embedder) from 64 to 128 input features for the"
        + " control image, as diffusers does");
    double[] up = lora.get("img_in.lora_B.weight").toDoubleArray();
    double[] down = lora.get("img_in.lora_A.weight").toDoubleArray();
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      assertThat(file.spec("img_in.weight").orElseThrow().shape()).containsExactly(INNER, 128);
      assertThat(file.metadata().get("loramerge_recipe")).contains("\"widened_input_features\":{\"img_in.weight\":[64,128]}");
      TensorData widened = file.tensor("img_in.weight");
      for (int j = 64; j < 128; j++) {
        double delta = 0;
        for (int k = 0; k < 4; k++) {
          delta += up[7 * 4 + k] * down[k * 128 + j];
        }
        assertThat(widened.getDouble(7 * 128 + j)).as("new column %d of row 7: the update alone, rounded once", j)
            .isEqualTo(TensorData.ofDoubles(new double[] {0.5 * delta}, DType.BF16, 1).getDouble(0));
      }
    }
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", temp.resolve("subtracted.safetensors").toString(), canny + "=0.5"))
        .isEqualTo(LoraCommand.BAD_INPUT);
    assertThat(command.err()).contains("subtracting the update cannot narrow it back; restore the original base instead");
    assertThat(temp.resolve("subtracted.safetensors")).doesNotExist();
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), canny + "=0.5"))
        .as("unfuse; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).as("the original's bytes, [3072, 64] again").isEqualTo(Files.readAllBytes(base));
  }
}

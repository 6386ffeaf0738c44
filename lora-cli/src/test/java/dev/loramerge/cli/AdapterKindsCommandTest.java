package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A LyCORIS file (a LoHa and a LoRA with LyCORIS's {@code dora_scale}, kohya SD1.5 names, as
 * LyCORIS's {@code custom_state_dict} writes them) through the command: inspect names the kinds,
 * fuse into a float8 e4m3fn base and unfuse with the original give the base's bytes back, and a
 * merge refuses the DoRA module in one line, unless it is given the base weights.
 */
class AdapterKindsCommandTest {
  private static final String TO_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  private static final String TO_V = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v";
  private static final String TO_V_WEIGHT = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.weight";

  @TempDir Path temp;

  private final CommandRun command = new CommandRun();
  private final Random random = new Random(11);

  private TensorData gaussian(double sd, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (sd * random.nextGaussian());
    }
    return TensorData.ofFloats(values, shape);
  }

  private Path lycoris() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put(TO_Q + ".hada_w1_a", gaussian(0.2, 320, 2));
    tensors.put(TO_Q + ".hada_w1_b", gaussian(0.2, 2, 320));
    tensors.put(TO_Q + ".hada_w2_a", gaussian(0.2, 320, 2));
    tensors.put(TO_Q + ".hada_w2_b", gaussian(0.2, 2, 320));
    tensors.put(TO_Q + ".alpha", TensorData.ofFloats(new float[] {2}));
    tensors.put(TO_V + ".lora_down.weight", gaussian(0.1, 4, 320));
    tensors.put(TO_V + ".lora_up.weight", gaussian(0.1, 320, 4));
    tensors.put(TO_V + ".alpha", TensorData.ofFloats(new float[] {4}));
    float[] magnitude = new float[320];
    for (int i = 0; i < magnitude.length; i++) {
      magnitude[i] = 0.5f + random.nextFloat();
    }
    tensors.put(TO_V + ".dora_scale", TensorData.ofFloats(magnitude, 320, 1));
    Path file = temp.resolve("lycoris.safetensors");
    Safetensors.write(file, tensors, Map.of("ss_network_module", "lycoris.kohya"));
    return file;
  }

  private Path float8Base() throws IOException {
    Map<String, TensorData> weights = new LinkedHashMap<>();
    for (String path : new String[] {"to_q", "to_v"}) {
      byte[] codes = new byte[320 * 320];
      for (int i = 0; i < codes.length; i++) {
        codes[i] = (byte) (random.nextInt(0x38) | (random.nextBoolean() ? 0x80 : 0));
      }
      weights.put("down_blocks.0.attentions.0.transformer_blocks.0.attn1." + path + ".weight",
          TensorData.of(DType.F8_E4M3, new long[] {320, 320}, ByteBuffer.wrap(codes)));
    }
    Path base = temp.resolve("base.safetensors");
    Safetensors.write(base, weights, Map.of());
    return base;
  }

  @Test
  void inspectNamesTheKinds() throws IOException {
    assertThat(command.run("inspect", lycoris().toString())).as("stderr: %s", command.err()).isZero();
    assertThat(command.out().lines().filter(line -> line.trim().startsWith("kinds")))
        .singleElement()
        .satisfies(line -> assertThat(line).contains("LoHa").contains("LoRA+DoRA"));
  }

  @Test
  void fuseIntoFloat8AndUnfuseWithTheOriginalGivesTheBaseBack() throws IOException {
    Path adapter = lycoris();
    Path base = float8Base();
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), adapter + "=0.8"))
        .as("fuse exit code; stderr: %s", command.err())
        .isZero();
    assertThat(Files.readAllBytes(fused)).isNotEqualTo(Files.readAllBytes(base));
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), adapter + "=0.8"))
        .as("unfuse exit code; stderr: %s", command.err())
        .isZero();
    assertThat(Files.readAllBytes(restored)).as("restored file").isEqualTo(Files.readAllBytes(base));
  }

  @Test
  void inspectModulesNamesEachModulesKindAndItsKohyaName() throws IOException {
    assertThat(command.run("inspect", "--modules", lycoris().toString())).as("stderr: %s", command.err()).isZero();
    assertThat(command.out())
        .containsPattern("unet\\.down_blocks\\.0\\.attentions\\.0\\.transformer_blocks\\.0\\.attn1\\.to_v +" + TO_V + " +LoRA\\+DoRA ")
        .containsPattern("unet\\.\\S+ +lora_unet_\\S+ +LoHa ");
  }

  @Test
  void doraBlendIsRecordedAndUnfusedWithTheSameFlag() throws IOException {
    Path adapter = lycoris();
    Path base = float8Base();
    Path blended = temp.resolve("blended.safetensors");
    Path inside = temp.resolve("inside.safetensors");
    assertThat(command.run("fuse", "--dora-blend", "--base", base.toString(), "-o", blended.toString(), adapter + "=0.5"))
        .as("fuse exit code; stderr: %s", command.err()).isZero();
    assertThat(command.run("fuse", "--base", base.toString(), "-o", inside.toString(), adapter + "=0.5"))
        .as("fuse exit code; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(blended);
        SafetensorsFile other = SafetensorsFile.open(inside)) {
      assertThat(file.metadata().get("loramerge_recipe")).contains("\"dora_weighting\":\"blend\"");
      assertThat(file.tensor(TO_V_WEIGHT)).isNotEqualTo(other.tensor(TO_V_WEIGHT));
    }
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--dora-blend", "--base", blended.toString(), "-o", restored.toString(), "--original",
        base.toString(), adapter + "=0.5")).as("unfuse exit code; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).as("restored file").isEqualTo(Files.readAllBytes(base));
    assertThat(command.run("unfuse", "--base", blended.toString(), "-o", temp.resolve("wrong.safetensors").toString(), "--original",
        base.toString(), adapter + "=0.5")).as("unfuse without the flag the fuse had").isEqualTo(3);
  }

  @Test
  void mergeRefusesDoraInOneLineAndWritesNothing() throws IOException {
    Path adapter = lycoris();
    int code = command.run("merge", "-o", temp.resolve("merged.safetensors").toString(), adapter + "=0.8");
    assertThat(code).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err())
        .contains("cannot merge module 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v'")
        .contains("a LoRA+DoRA")
        .contains("fuse it into the base instead");
    try (Stream<Path> files = Files.list(temp)) {
      assertThat(files.map(file -> file.getFileName().toString())).containsExactly("lycoris.safetensors");
    }
    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "--base", float8Base().toString(), "-o", merged.toString(), adapter + "=0.8"))
        .as("with the base; stderr: %s", command.err())
        .isZero();
    assertThat(Files.exists(merged)).isTrue();
  }

  /**
   * ties_svd works on full updates (PEFT's {@code _svd_generalized_task_arithmetic_weighted_adapter}),
   * so it takes the LoHa and, with the base, the DoRA module; ties works on the factors and names
   * ties_svd when it refuses them.
   */
  @Test
  void tiesSvdMergesTheKindsAndTiesRefusesThemNamingTiesSvd() throws IOException {
    Path adapter = lycoris();
    Path base = float8Base();
    Path refused = temp.resolve("refused.safetensors");
    assertThat(command.run("merge", "--algorithm", "ties", "--density", "0.5", "--base", base.toString(), "-o", refused.toString(),
        adapter + "=0.8")).as("stderr: %s", command.err()).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err())
        .contains("cannot merge module 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_")
        .contains("use ties_svd, the same method on the full updates");
    assertThat(Files.exists(refused)).isFalse();
    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "--algorithm", "ties_svd", "--density", "0.5", "--base", base.toString(), "-o", merged.toString(),
        adapter + "=0.8")).as("stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(merged)) {
      assertThat(file.metadata().get("loramerge_recipe")).contains("ties_svd");
      assertThat(file.contains(TO_Q + ".lora_down.weight")).as("the LoHa merged to a LoRA").isTrue();
      assertThat(file.contains(TO_V + ".lora_down.weight")).as("the DoRA module merged to a LoRA").isTrue();
    }
  }
}

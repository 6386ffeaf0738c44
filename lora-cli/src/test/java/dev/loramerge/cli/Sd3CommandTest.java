package dev.loramerge.cli;

import static dev.loramerge.cli.TestTensors.gaussian;
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
 * An SD3.5 Medium LoRA in ComfyUI's keys (the original MMDiT names under {@code diffusion_model.};
 * see {@code dev.loramerge.io.Sd3OriginalNamesTest} for where the names come from) through the
 * command: inspect with each module's name in the file and kind, convert to kohya, merge with a
 * kohya file, fuse into an original-named single-file base and unfuse back to its bytes.
 */
class Sd3CommandTest {
  private static final long INNER = 1536;

  @TempDir Path temp;

  private final CommandRun command = CommandRun.clearingBeforeEachRun();

  private static void module(Map<String, TensorData> tensors, Random random, String name, long in, long out) {
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.F32));
    tensors.put(name + ".lora_down.weight", gaussian(random, 4, in));
    tensors.put(name + ".lora_up.weight", gaussian(random, out, 4));
  }

  @Test
  void inspectsConvertsMergesFusesAndUnfusesAComfyUiSd35Lora() throws IOException {
    Random random = new Random(1);
    Map<String, TensorData> comfy = new LinkedHashMap<>();
    module(comfy, random, "diffusion_model.joint_blocks.0.x_block.attn.qkv", INNER, 3 * INNER);
    module(comfy, random, "diffusion_model.joint_blocks.0.x_block.attn.proj", INNER, INNER);
    module(comfy, random, "diffusion_model.final_layer.adaLN_modulation.1", INNER, 2 * INNER);
    Path comfyFile = temp.resolve("sd35-style.safetensors");
    Safetensors.write(comfyFile, comfy, Map.of());

    assertThat(command.run("inspect", "--modules", comfyFile.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out())
        .containsPattern("format +comfyui\\n")
        .containsPattern("architecture +SD3\\.5 Medium\\n")
        .containsPattern("transformer\\.transformer_blocks\\.0\\.attn\\.to_k +diffusion_model\\.joint_blocks\\.0\\.x_block\\.attn\\.qkv"
            + " rows 1536–3071 +LoRA +4 +4 +1 +joint_blocks\\.0\\n")
        .containsPattern("transformer\\.norm_out\\.linear +diffusion_model\\.final_layer\\.adaLN_modulation\\.1 rows 1536–3071,"
            + " 0–1535 +LoRA +4 +4 +1 +-\\n")
        .containsPattern("transformer\\.transformer_blocks\\.0\\.attn\\.to_out\\.0 +diffusion_model\\.joint_blocks\\.0\\.x_block\\.attn\\.proj"
            + " +LoRA ");

    Path kohya = temp.resolve("sd35-style-kohya.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), comfyFile.toString()))
        .as("convert; stderr: %s", command.err()).isZero();
    assertThat(command.run("inspect", "--modules", kohya.toString())).as("inspect kohya; stderr: %s", command.err()).isZero();
    assertThat(command.out()).containsPattern("format +kohya\\n")
        .contains("lora_unet_joint_blocks_0_x_block_attn_qkv rows 3072–4607");

    Map<String, TensorData> other = new LinkedHashMap<>();
    module(other, random, "lora_unet_joint_blocks_0_x_block_attn_proj", INNER, INNER);
    Path otherFile = temp.resolve("sd35-detail.safetensors");
    Safetensors.write(otherFile, other, Map.of());
    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "-o", merged.toString(), comfyFile + "=0.75", otherFile + "=0.5"))
        .as("merge; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(merged)) {
      assertThat(file.tensor("lora_unet_joint_blocks_0_x_block_attn_proj.lora_down.weight").shape()).containsExactly(8, INNER);
      assertThat(file.tensor("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight").shape()).containsExactly(3 * INNER, 4);
    }

    Path base = temp.resolve("sd3.5_medium.safetensors");
    Safetensors.write(base, Map.of(
        "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", gaussian(random, 3 * INNER, INNER),
        "model.diffusion_model.joint_blocks.0.x_block.attn.proj.weight", gaussian(random, INNER, INNER),
        "model.diffusion_model.final_layer.adaLN_modulation.1.weight", gaussian(random, 2 * INNER, INNER),
        "model.diffusion_model.pos_embed", gaussian(random, 1, 16, INNER)), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), kohya + "=0.8", otherFile + "=0.5"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 5 modules into");
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(),
        comfyFile + "=0.8", otherFile + "=0.5")).as("unfuse; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).isEqualTo(Files.readAllBytes(base));
  }
}

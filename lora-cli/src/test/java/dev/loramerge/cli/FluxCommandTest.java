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
 * A Flux.1 LoRA in kohya's layout (sd-scripts {@code networks/lora_flux.py}: {@code
 * lora_unet_double_blocks_0_img_attn_qkv}, the fused q, k, v) through the command: inspect,
 * convert to diffusers, fuse into BFL's checkpoint names and unfuse back to the original bytes;
 * and the layouts in BFL's names (XLabs, ComfyUI, BFL's control LoRAs; see {@code
 * dev.loramerge.io.OriginalNamesFormatTest} for where their names come from) through every
 * command that reads them.
 */
class FluxCommandTest {
  private static final long INNER = 3072;

  @TempDir Path temp;

  private final CommandRun command = new CommandRun();

  @Test
  void inspectsConvertsFusesAndUnfusesAKohyaFluxLora() throws IOException {
    Random random = new Random(1);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String qkv = "lora_unet_double_blocks_0_img_attn_qkv";
    tensors.put(qkv + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.BF16));
    tensors.put(qkv + ".lora_down.weight", gaussian(random, 4, INNER));
    tensors.put(qkv + ".lora_up.weight", gaussian(random, 3 * INNER, 4));
    Path lora = temp.resolve("flux-style.safetensors");
    Safetensors.write(lora, tensors, Map.of("ss_network_module", "networks.lora_flux"));

    assertThat(command.run("inspect", lora.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("Flux.1").contains("kohya");

    Path diffusers = temp.resolve("flux-style-diffusers.safetensors");
    assertThat(command.run("convert", "--to", "diffusers", "-o", diffusers.toString(), lora.toString()))
        .as("convert; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("transformer.transformer_blocks.0.attn.to_v.lora_B.weight").shape()).containsExactly(INNER, 4);
    }

    Path base = temp.resolve("flux1-dev.safetensors");
    Safetensors.write(base, Map.of("double_blocks.0.img_attn.qkv.weight", gaussian(random, 3 * INNER, INNER),
        "double_blocks.0.img_attn.norm.query_norm.scale", gaussian(random, 128)), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), diffusers + "=0.8"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 3 modules into");
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), lora + "=0.8"))
        .as("unfuse; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).isEqualTo(Files.readAllBytes(base));
  }

  private static void lora(Map<String, TensorData> tensors, Random random, String down, String up, long in, long out) {
    tensors.put(down, gaussian(random, 4, in));
    tensors.put(up, gaussian(random, out, 4));
  }

  @Test
  void inspectsConvertsMergesAndFusesXlabsComfyUiAndControlLoras() throws IOException {
    Random random = new Random(2);
    Map<String, TensorData> xlabs = new LinkedHashMap<>();
    lora(xlabs, random, "double_blocks.0.processor.qkv_lora1.down.weight", "double_blocks.0.processor.qkv_lora1.up.weight",
        INNER, 3 * INNER);
    lora(xlabs, random, "double_blocks.0.processor.proj_lora1.down.weight", "double_blocks.0.processor.proj_lora1.up.weight",
        INNER, INNER);
    Path xlabsFile = temp.resolve("xlabs.safetensors");
    Safetensors.write(xlabsFile, xlabs, Map.of());
    Map<String, TensorData> comfy = new LinkedHashMap<>();
    lora(comfy, random, "diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight",
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight", INNER, 3 * INNER);
    comfy.put("diffusion_model.double_blocks.0.img_attn.qkv.alpha", TensorData.ofDoubles(new double[] {8}, DType.F32));
    Path comfyFile = temp.resolve("comfy.safetensors");
    Safetensors.write(comfyFile, comfy, Map.of());
    Map<String, TensorData> control = new LinkedHashMap<>();
    lora(control, random, "double_blocks.0.img_attn.proj.lora_A.weight", "double_blocks.0.img_attn.proj.lora_B.weight", INNER, INNER);
    control.put("double_blocks.0.img_attn.proj.lora_B.bias", gaussian(random, INNER));
    lora(control, random, "double_blocks.0.img_attn.qkv.lora_A.weight", "double_blocks.0.img_attn.qkv.lora_B.weight", INNER, 3 * INNER);
    lora(control, random, "img_in.lora_A.weight", "img_in.lora_B.weight", 128, INNER);
    Path controlFile = temp.resolve("canny.safetensors");
    Safetensors.write(controlFile, control, Map.of());

    for (Object[] layout : new Object[][] {{xlabsFile, "xlabs"}, {comfyFile, "comfyui"}}) {
      command.clearOut();
      assertThat(command.run("inspect", layout[0].toString())).as("inspect %s; stderr: %s", layout[1], command.err()).isZero();
      assertThat(command.out()).containsPattern("format +" + layout[1] + "\\n").containsPattern("architecture +Flux\\.1\\n");
      for (String format : new String[] {"kohya", "diffusers"}) {
        Path converted = temp.resolve(layout[1] + "-" + format + ".safetensors");
        assertThat(command.run("convert", "--to", format, "-o", converted.toString(), layout[0].toString()))
            .as("convert %s to %s; stderr: %s", layout[1], format, command.err()).isZero();
      }
    }
    try (SafetensorsFile file = SafetensorsFile.open(temp.resolve("xlabs-kohya.safetensors"))) {
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"))
          .isEqualTo(xlabs.get("double_blocks.0.processor.qkv_lora1.up.weight"));
    }

    // The control LoRA widens img_in: read at its 128 input features (a fuse widens the base's).
    command.clearOut();
    assertThat(command.run("inspect", controlFile.toString())).as("stderr: %s", command.err()).isZero();
    assertThat(command.out()).containsPattern("format +bfl\\n").containsPattern("architecture +Flux\\.1\\n").contains("LoRA+bias");

    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "-o", merged.toString(), xlabsFile + "=0.5", comfyFile + "=0.5"))
        .as("merge; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(merged)) {
      // Merged in the kohya layout: the inputs' formats are read only.
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight").shape()).containsExactly(3 * INNER, 8);
    }
    assertThat(command.run("merge", "--format", "xlabs", "-o", merged.toString(), xlabsFile.toString())).isEqualTo(2);
    assertThat(command.err()).contains("'xlabs' is a layout that is read, not written");

    Path base = temp.resolve("flux1-dev.safetensors");
    Safetensors.write(base, Map.of(
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight", gaussian(random, 3 * INNER, INNER),
        "model.diffusion_model.double_blocks.0.img_attn.proj.weight", gaussian(random, INNER, INNER),
        "model.diffusion_model.double_blocks.0.img_attn.proj.bias", gaussian(random, INNER)), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    command.clearOut();
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), xlabsFile + "=0.7", comfyFile + "=0.3"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 4 modules into");
  }
}

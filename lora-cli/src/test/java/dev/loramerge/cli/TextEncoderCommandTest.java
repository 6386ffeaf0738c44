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
 * LoRAs on the T5 text encoder through the command: a Flux.1 file from sd-scripts' {@code
 * networks/lora_flux.py} with {@code --train_t5xxl} ({@code lora_te3_encoder_block_N_…}, see
 * {@code dev.loramerge.io.TextEncoderLayoutsTest} for where each name comes from) is inspected,
 * converted, merged with a second one and fused into {@code t5xxl_fp16.safetensors}' bare names and
 * unfused back to the original bytes; an SD3.5 file on its three text encoders is inspected.
 */
class TextEncoderCommandTest {
  private static final long T5 = 4096;

  @TempDir Path temp;

  private final CommandRun command = new CommandRun();

  private static void module(Map<String, TensorData> tensors, Random random, String name, long in, long out) {
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.BF16));
    tensors.put(name + ".lora_down.weight", gaussian(random, 4, in));
    tensors.put(name + ".lora_up.weight", gaussian(random, out, 4));
  }

  private Path fluxT5(String name, long seed) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    module(tensors, random, "lora_unet_double_blocks_3_img_attn_proj", 3072, 3072);
    module(tensors, random, "lora_te3_encoder_block_1_layer_0_SelfAttention_k", T5, T5);
    Path path = temp.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, Map.of("ss_network_module", "networks.lora_flux"));
    return path;
  }

  @Test
  void inspectsConvertsMergesFusesAndUnfusesAFluxT5Lora() throws IOException {
    Path lora = fluxT5("flux-t5", 1);
    assertThat(command.run("inspect", lora.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("Flux.1").contains("kohya").contains("text_encoder_2");

    Path diffusers = temp.resolve("flux-t5-diffusers.safetensors");
    assertThat(command.run("convert", "--to", "diffusers", "-o", diffusers.toString(), lora.toString()))
        .as("convert; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("text_encoder_2.encoder.block.1.layer.0.SelfAttention.k.lora_A.weight").shape())
          .containsExactly(4, T5);
    }

    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "-o", merged.toString(), diffusers + "=0.5", fluxT5("second", 2) + "=0.5"))
        .as("merge; stderr: %s", command.err()).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(merged)) {
      assertThat(file.tensor("text_encoder_2.encoder.block.1.layer.0.SelfAttention.k.lora_A.weight").shape())
          .as("cat of two rank-4 inputs").containsExactly(8, T5);
    }

    Path base = temp.resolve("t5xxl_fp16.safetensors");
    Random random = new Random(3);
    Safetensors.write(base, Map.of(
        "encoder.block.1.layer.0.SelfAttention.k.weight", gaussian(random, T5, T5).to(DType.F16),
        "shared.weight", gaussian(random, 8, T5).to(DType.F16)), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "--allow-missing", "-o", fused.toString(), lora + "=0.8"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 1 modules into").contains("skipped 1 modules");
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "--allow-missing", "-o", restored.toString(),
            "--original", base.toString(), lora + "=0.8"))
        .as("unfuse; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).isEqualTo(Files.readAllBytes(base));
  }

  @Test
  void inspectNamesAnSd3LoraOnItsTextEncoders() throws IOException {
    Random random = new Random(4);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    module(tensors, random, "lora_te1_text_model_encoder_layers_0_mlp_fc1", 768, 3072);
    module(tensors, random, "lora_te2_text_model_encoder_layers_0_mlp_fc1", 1280, 5120);
    module(tensors, random, "lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0", T5, 10240);
    Path lora = temp.resolve("sd3-te.safetensors");
    Safetensors.write(lora, tensors, Map.of("ss_network_module", "networks.lora_sd3"));
    assertThat(command.run("inspect", lora.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("SD3.5 Medium").contains("text_encoder_3");
  }
}

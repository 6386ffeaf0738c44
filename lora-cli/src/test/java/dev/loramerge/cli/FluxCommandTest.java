package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
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
 * convert to diffusers, fuse into BFL's checkpoint names and unfuse back to the original bytes.
 */
class FluxCommandTest {
  private static final long INNER = 3072;

  @TempDir Path temp;

  private final StringWriter out = new StringWriter();
  private final StringWriter err = new StringWriter();

  private int run(String... args) {
    return LoraCommand.execute(args, new PrintWriter(out, true), new PrintWriter(err, true));
  }

  private static TensorData gaussian(Random random, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.BF16, shape);
  }

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

    assertThat(run("inspect", lora.toString())).as("inspect; stderr: %s", err).isZero();
    assertThat(out.toString()).contains("Flux.1").contains("kohya");

    Path diffusers = temp.resolve("flux-style-diffusers.safetensors");
    assertThat(run("convert", "--to", "diffusers", "-o", diffusers.toString(), lora.toString()))
        .as("convert; stderr: %s", err).isZero();
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("transformer.transformer_blocks.0.attn.to_v.lora_B.weight").shape()).containsExactly(INNER, 4);
    }

    Path base = temp.resolve("flux1-dev.safetensors");
    Safetensors.write(base, Map.of("double_blocks.0.img_attn.qkv.weight", gaussian(random, 3 * INNER, INNER),
        "double_blocks.0.img_attn.norm.query_norm.scale", gaussian(random, 128)), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(run("fuse", "--base", base.toString(), "-o", fused.toString(), diffusers + "=0.8"))
        .as("fuse; stderr: %s", err).isZero();
    assertThat(out.toString()).contains("fused 3 modules into");
    Path restored = temp.resolve("restored.safetensors");
    assertThat(run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), lora + "=0.8"))
        .as("unfuse; stderr: %s", err).isZero();
    assertThat(Files.readAllBytes(restored)).isEqualTo(Files.readAllBytes(base));
  }
}

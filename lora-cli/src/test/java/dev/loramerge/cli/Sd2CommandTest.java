package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SD2.x LoRAs in the PEFT and diffusers layouts through the command: a PEFT UNet folder and a
 * diffusers text-encoder file are inspected as SD2.x, converted to kohya and back, and fused
 * together into a single-file SD2.1 checkpoint (the UNet under {@code model.diffusion_model.}, the
 * OpenCLIP-H text encoder with q, k, v stacked in {@code attn.in_proj_weight}) and unfused back to
 * its bytes. Where each name and shape comes from is in {@code dev.loramerge.io.Sd2LayoutsTest}.
 */
class Sd2CommandTest {
  private static final long WIDTH = 1024;
  private static final String TO_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k";
  private static final String PROJ_IN = "down_blocks.0.attentions.0.proj_in";
  private static final String V_PROJ = "text_model.encoder.layers.22.self_attn.v_proj";
  private static final String ORIGINAL_TO_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight";
  private static final String ORIGINAL_PROJ_IN = "model.diffusion_model.input_blocks.1.1.proj_in.weight";
  private static final String IN_PROJ = "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight";

  @TempDir Path temp;

  private final CommandRun command = new CommandRun();
  private final Random random = new Random(7);

  private TensorData gaussian(long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.F32, shape);
  }

  /** A PEFT folder on the UNet: r 4, lora_alpha 8 (scale 2). */
  private Path peftUnet(Map<String, TensorData> tensors) throws IOException {
    tensors.put("base_model.model." + TO_K + ".lora_A.weight", gaussian(4, WIDTH));
    tensors.put("base_model.model." + TO_K + ".lora_B.weight", gaussian(320, 4));
    tensors.put("base_model.model." + PROJ_IN + ".lora_A.weight", gaussian(4, 320));
    tensors.put("base_model.model." + PROJ_IN + ".lora_B.weight", gaussian(320, 4));
    Path folder = temp.resolve("sd2-unet");
    Files.createDirectories(folder);
    Safetensors.write(folder.resolve("adapter_model.safetensors"), tensors, Map.of("format", "pt"));
    Files.writeString(folder.resolve("adapter_config.json"),
        "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"to_k\", \"proj_in\"]}",
        StandardCharsets.UTF_8);
    return folder;
  }

  /** A diffusers file on the text encoder's q, k and v of layer 22: rank 4, no alpha (scale 1). */
  private Path diffusersTextEncoder(Map<String, TensorData> tensors) throws IOException {
    for (String part : new String[] {"q_proj", "k_proj", "v_proj"}) {
      String name = "text_encoder.text_model.encoder.layers.22.self_attn." + part;
      tensors.put(name + ".lora_A.weight", gaussian(4, WIDTH));
      tensors.put(name + ".lora_B.weight", gaussian(WIDTH, 4));
    }
    Path path = temp.resolve("sd2-te.safetensors");
    Safetensors.write(path, tensors, Map.of("format", "pt"));
    return path;
  }

  @Test
  void inspectsConvertsFusesAndUnfusesSd2PeftAndDiffusersLoras() throws IOException {
    Map<String, TensorData> unetTensors = new LinkedHashMap<>();
    Map<String, TensorData> teTensors = new LinkedHashMap<>();
    Path unet = peftUnet(unetTensors);
    Path textEncoder = diffusersTextEncoder(teTensors);

    assertThat(command.run("inspect", unet.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("SD2.x").contains("peft").doesNotContain("SD1.5");
    command.clearOut();
    assertThat(command.run("inspect", textEncoder.toString())).as("inspect; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("SD2.x").contains("diffusers").doesNotContain("SD1.5");

    Path kohya = temp.resolve("sd2-unet-kohya.safetensors");
    assertThat(command.run("convert", "--to", "kohya", "-o", kohya.toString(), unet.toString()))
        .as("convert; stderr: %s", command.err()).isZero();
    Path peftAgain = temp.resolve("sd2-unet-again");
    assertThat(command.run("convert", "--to", "peft", "-o", peftAgain.toString(), kohya.toString()))
        .as("convert; stderr: %s", command.err()).isZero();
    try (SafetensorsFile kohyaFile = SafetensorsFile.open(kohya);
        SafetensorsFile again = SafetensorsFile.open(peftAgain.resolve("adapter_model.safetensors"))) {
      assertThat(kohyaFile.tensor("lora_unet_down_blocks_0_attentions_0_proj_in.alpha").getDouble(0)).isEqualTo(8);
      for (Map.Entry<String, TensorData> tensor : unetTensors.entrySet()) {
        assertThat(again.tensor(tensor.getKey()).bytes()).as(tensor.getKey()).isEqualTo(tensor.getValue().bytes());
      }
    }

    TensorData toK = gaussian(320, WIDTH);
    TensorData projIn = gaussian(320, 320);
    TensorData inProj = gaussian(3 * WIDTH, WIDTH);
    Path base = temp.resolve("v2-1_768-ema-pruned.safetensors");
    Safetensors.write(base, Map.of(ORIGINAL_TO_K, toK, ORIGINAL_PROJ_IN, projIn, IN_PROJ, inProj), Map.of());
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), unet + "=0.8", textEncoder + "=0.6"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 5 modules into");
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      assertFused(file.tensor(ORIGINAL_TO_K), 0, toK, 0, unetTensors, "base_model.model." + TO_K, 0.8 * 2);
      assertFused(file.tensor(ORIGINAL_PROJ_IN), 0, projIn, 0, unetTensors, "base_model.model." + PROJ_IN, 0.8 * 2);
      // v is the third block of rows of in_proj_weight.
      assertFused(file.tensor(IN_PROJ), 2 * WIDTH * WIDTH, inProj, 2 * WIDTH * WIDTH, teTensors, "text_encoder." + V_PROJ, 0.6);
    }
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(),
            unet + "=0.8", textEncoder + "=0.6"))
        .as("unfuse; stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).isEqualTo(Files.readAllBytes(base));
  }

  /** W + coefficient·B·A, in float64 from the factors written, rounded once to float32. */
  private static void assertFused(TensorData fused, long offset, TensorData original, long originalOffset,
      Map<String, TensorData> tensors, String module, double coefficient) {
    TensorData down = tensors.get(module + ".lora_A.weight");
    TensorData up = tensors.get(module + ".lora_B.weight");
    long rank = down.shape()[0];
    long in = down.shape()[1];
    for (long i = 0; i < up.shape()[0]; i++) {
      for (long j = 0; j < in; j++) {
        double delta = 0;
        for (long k = 0; k < rank; k++) {
          delta += up.getDouble(i * rank + k) * down.getDouble(k * in + j);
        }
        double expected = (float) (original.getDouble(originalOffset + i * in + j) + coefficient * delta);
        double actual = fused.getDouble(offset + i * in + j);
        if (actual != expected) {
          assertThat(actual).as("%s element [%d, %d]", module, i, j).isEqualTo(expected);
        }
      }
    }
  }
}

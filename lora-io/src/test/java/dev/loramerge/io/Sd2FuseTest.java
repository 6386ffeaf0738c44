package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An SD2.x kohya LoRA ({@code train_network.py} names: {@code lora_unet_} plus the underscored
 * diffusers path; cross-attention keys and values from OpenCLIP-H's 1024 features) fused into a
 * single-file SD2.1 checkpoint ({@code model.diffusion_model.input_blocks.1.1…}).
 */
class Sd2FuseTest {
  @TempDir Path folder;

  @Test
  void kohyaSd2LoraFusesIntoTheOriginalCheckpointNames() throws IOException {
    Random random = new Random(1);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    tensors.put(module + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.F32));
    tensors.put(module + ".lora_down.weight", gaussian(random, 8, 1024));
    tensors.put(module + ".lora_up.weight", gaussian(random, 320, 8));
    Path lora = folder.resolve("sd2.safetensors");
    Safetensors.write(lora, tensors, ImmutableMap.of());
    String weight = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight";
    Path base = folder.resolve("v2-1_768-ema-pruned.safetensors");
    TensorData original = gaussian(random, 320, 1024);
    Safetensors.write(base, ImmutableMap.of(weight, original), ImmutableMap.of());

    LoraAdapter adapter =
        LoraFiles.read(lora, LoraReadOptions.builder().baseKeys(java.util.List.of(weight)).build());
    ModuleKey key = ModuleKey.parse("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k");
    assertThat(adapter.modules().keySet()).containsExactly(key);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd2());
    Path fused = folder.resolve("fused.safetensors");
    assertThat(LoraFuser.of(LoraMerger.builder().add(adapter, 1).build()).fuseInto(SafetensorsWeights.of(base, fused))
            .report().matched())
        .containsEntry(key, weight);
    double[] delta = adapter.module(key).orElseThrow().deltaF64();
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      TensorData result = file.tensor(weight);
      for (int i : new int[] {0, 1, 5000, 320 * 1024 - 1}) {
        assertThat(result.getDouble(i)).as("element %d", i).isEqualTo((double) (float) (original.getDouble(i) + delta[i]));
      }
    }
  }

  private static TensorData gaussian(Random random, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.F32, shape);
  }
}

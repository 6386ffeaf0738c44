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
 * single-file SD2.1 checkpoint ({@code model.diffusion_model.input_blocks.1.1…}); and one on the
 * text encoder ({@code lora_te_text_model_encoder_layers_N_…}), whose weights the single-file
 * checkpoint holds in OpenCLIP's names under {@code cond_stage_model.model.transformer.resblocks.N}
 * ({@code attn.in_proj_weight} with q, k, v stacked, {@code attn.out_proj}, {@code mlp.c_fc},
 * {@code mlp.c_proj}: what diffusers' {@code convert_open_clip_checkpoint} in {@code
 * single_file_utils.py} splits into the transformers names).
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

  @Test
  void textEncoderFusesIntoOpenClipNamesAsIntoDiffusersNames() throws IOException {
    long width = 1024;
    Random random = new Random(2);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String module : new String[] {"self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc2"}) {
      String name = "lora_te_text_model_encoder_layers_22_" + module;
      tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.F32));
      tensors.put(name + ".lora_down.weight", gaussian(random, 8, module.equals("mlp_fc2") ? 4 * width : width));
      tensors.put(name + ".lora_up.weight", gaussian(random, width, 8));
    }
    Path lora = folder.resolve("sd2-te.safetensors");
    Safetensors.write(lora, tensors, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(lora);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd2());

    TensorData q = gaussian(random, width, width);
    TensorData k = gaussian(random, width, width);
    TensorData v = gaussian(random, width, width);
    TensorData out = gaussian(random, width, width);
    TensorData fc2 = gaussian(random, width, 4 * width);
    java.nio.ByteBuffer inProj = java.nio.ByteBuffer.allocate((int) (3 * q.byteSize()));
    inProj.put(q.bytes()).put(k.bytes()).put(v.bytes()).flip();
    String resblock = "cond_stage_model.model.transformer.resblocks.22.";
    Path single = folder.resolve("v2-1_768-ema-pruned.safetensors");
    Safetensors.write(single, ImmutableMap.of(
        resblock + "attn.in_proj_weight", TensorData.of(DType.F32, new long[] {3 * width, width}, inProj),
        resblock + "attn.out_proj.weight", out,
        resblock + "mlp.c_proj.weight", fc2), ImmutableMap.of());
    String layer = "text_encoder.text_model.encoder.layers.22.";
    Path pipeline = folder.resolve("pipeline.safetensors");
    Safetensors.write(pipeline, ImmutableMap.of(
        layer + "self_attn.q_proj.weight", q, layer + "self_attn.k_proj.weight", k, layer + "self_attn.v_proj.weight", v,
        layer + "self_attn.out_proj.weight", out, layer + "mlp.fc2.weight", fc2), ImmutableMap.of());

    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.6).build());
    Path fusedSingle = folder.resolve("fused-single.safetensors");
    Path fusedPipeline = folder.resolve("fused-pipeline.safetensors");
    assertThat(fuser.fuseInto(SafetensorsWeights.of(single, fusedSingle)).report().matched())
        .containsEntry(ModuleKey.parse(layer + "self_attn.k_proj"), resblock + "attn.in_proj_weight")
        .containsEntry(ModuleKey.parse(layer + "self_attn.out_proj"), resblock + "attn.out_proj.weight")
        .containsEntry(ModuleKey.parse(layer + "mlp.fc2"), resblock + "mlp.c_proj.weight")
        .hasSize(5);
    fuser.fuseInto(SafetensorsWeights.of(pipeline, fusedPipeline));
    try (SafetensorsFile a = SafetensorsFile.open(fusedSingle);
        SafetensorsFile b = SafetensorsFile.open(fusedPipeline)) {
      java.nio.ByteBuffer parts = java.nio.ByteBuffer.allocate((int) (3 * q.byteSize()));
      for (String part : new String[] {"q_proj", "k_proj", "v_proj"}) {
        parts.put(b.tensor(layer + "self_attn." + part + ".weight").bytes());
      }
      assertThat(a.tensor(resblock + "attn.in_proj_weight").bytes()).isEqualTo(parts.flip());
      assertThat(a.tensor(resblock + "attn.out_proj.weight")).isEqualTo(b.tensor(layer + "self_attn.out_proj.weight"));
      assertThat(a.tensor(resblock + "mlp.c_proj.weight")).isEqualTo(b.tensor(layer + "mlp.fc2.weight")).isNotEqualTo(fc2);
      double[] delta = adapter.module(ModuleKey.parse(layer + "self_attn.v_proj")).orElseThrow().deltaF64();
      TensorData fusedV = a.tensor(resblock + "attn.in_proj_weight");
      for (int i : new int[] {0, 7, 1024 * 1024 - 1}) {
        assertThat(fusedV.getDouble(2 * width * width + i))
            .as("v element %d", i).isEqualTo((double) (float) (v.getDouble(i) + 0.6 * delta[i]));
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

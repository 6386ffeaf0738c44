package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An SDXL LoRA on text encoder 2 (kohya {@code lora_te2_text_model_encoder_layers_N_…}) fused into
 * a single-file SDXL checkpoint, where that encoder is in OpenCLIP's names ({@code
 * conditioner.embedders.1.model.transformer.resblocks.N.attn.in_proj_weight} with q, k, v stacked,
 * {@code attn.out_proj}, {@code mlp.c_fc}, {@code mlp.c_proj}; as sgm's {@code
 * FrozenOpenCLIPEmbedder2} and diffusers' single-file converter name them), gives the same bytes
 * as a fuse into the diffusers {@code text_encoder_2} names. Its {@code text_projection} (kohya
 * {@code lora_te2_text_projection}, as ComfyUI's {@code comfy/lora.py} maps OneTrainer's) is the bare
 * parameter {@code conditioner.embedders.1.model.text_projection} there, [in, out]: OpenCLIP
 * applies it as {@code x @ text_projection}, and diffusers' {@code convert_open_clip_checkpoint}
 * ({@code single_file_utils.py}) loads it as {@code text_projection.weight = checkpoint[…].T}.
 */
class SdxlOpenClipFuseTest {
  private static final long WIDTH = 1280;

  @TempDir Path folder;

  private static TensorData gaussian(Random random, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.F16, shape);
  }

  @Test
  void textEncoder2FusesIntoOpenClipNamesAsIntoDiffusersNames() throws IOException {
    Random random = new Random(1);
    Map<String, TensorData> lora = new LinkedHashMap<>();
    for (String module : new String[] {"self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "mlp_fc1"}) {
      String name = "lora_te2_text_model_encoder_layers_3_" + module;
      long out = module.equals("mlp_fc1") ? 4 * WIDTH : WIDTH;
      lora.put(name + ".alpha", TensorData.ofDoubles(new double[] {4}, DType.F16));
      lora.put(name + ".lora_down.weight", gaussian(random, 8, WIDTH));
      lora.put(name + ".lora_up.weight", gaussian(random, out, 8));
    }
    Path loraFile = folder.resolve("sdxl-te2.safetensors");
    Safetensors.write(loraFile, lora, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(loraFile);

    TensorData q = gaussian(random, WIDTH, WIDTH);
    TensorData k = gaussian(random, WIDTH, WIDTH);
    TensorData v = gaussian(random, WIDTH, WIDTH);
    TensorData fc1 = gaussian(random, 4 * WIDTH, WIDTH);
    ByteBuffer inProj = ByteBuffer.allocate((int) (3 * q.byteSize()));
    inProj.put(q.bytes()).put(k.bytes()).put(v.bytes()).flip();
    String resblock = "conditioner.embedders.1.model.transformer.resblocks.3.";
    Path single = folder.resolve("sd_xl_base_1.0.safetensors");
    Safetensors.write(single, ImmutableMap.of(
        resblock + "attn.in_proj_weight", TensorData.of(DType.F16, new long[] {3 * WIDTH, WIDTH}, inProj),
        resblock + "mlp.c_fc.weight", fc1), ImmutableMap.of());
    String layer = "text_encoder_2.text_model.encoder.layers.3.";
    Path pipeline = folder.resolve("pipeline.safetensors");
    Safetensors.write(pipeline, ImmutableMap.of(
        layer + "self_attn.q_proj.weight", q, layer + "self_attn.k_proj.weight", k, layer + "self_attn.v_proj.weight", v,
        layer + "mlp.fc1.weight", fc1), ImmutableMap.of());

    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.7).build());
    Path fusedSingle = folder.resolve("fused-single.safetensors");
    Path fusedPipeline = folder.resolve("fused-pipeline.safetensors");
    assertThat(fuser.fuseInto(SafetensorsWeights.of(single, fusedSingle)).report().matched())
        .containsEntry(ModuleKey.parse("text_encoder_2.text_model.encoder.layers.3.self_attn.v_proj"), resblock + "attn.in_proj_weight")
        .containsEntry(ModuleKey.parse("text_encoder_2.text_model.encoder.layers.3.mlp.fc1"), resblock + "mlp.c_fc.weight");
    fuser.fuseInto(SafetensorsWeights.of(pipeline, fusedPipeline));
    try (SafetensorsFile a = SafetensorsFile.open(fusedSingle);
        SafetensorsFile b = SafetensorsFile.open(fusedPipeline)) {
      ByteBuffer parts = ByteBuffer.allocate((int) (3 * q.byteSize()));
      for (String part : new String[] {"q_proj", "k_proj", "v_proj"}) {
        parts.put(b.tensor(layer + "self_attn." + part + ".weight").bytes());
      }
      assertThat(a.tensor(resblock + "attn.in_proj_weight").bytes()).isEqualTo(parts.flip());
      assertThat(a.tensor(resblock + "mlp.c_fc.weight")).isEqualTo(b.tensor(layer + "mlp.fc1.weight"));
      assertThat(a.tensor(resblock + "mlp.c_fc.weight")).isNotEqualTo(fc1);
    }
  }

  @Test
  void textProjectionFusesIntoTheTransposedOpenClipParameter() throws IOException {
    Random random = new Random(2);
    Map<String, TensorData> lora = new LinkedHashMap<>();
    lora.put("lora_te2_text_projection.alpha", TensorData.ofDoubles(new double[] {8}, DType.F16));
    lora.put("lora_te2_text_projection.lora_down.weight", gaussian(random, 8, WIDTH));
    lora.put("lora_te2_text_projection.lora_up.weight", gaussian(random, WIDTH, 8));
    Path loraFile = folder.resolve("sdxl-projection.safetensors");
    Safetensors.write(loraFile, lora, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(loraFile);
    ModuleKey key = ModuleKey.parse("text_encoder_2.text_projection");
    assertThat(adapter.modules().keySet()).containsExactly(key);

    // Not square in content: row i of the diffusers weight is column i of the parameter.
    TensorData weight = gaussian(random, WIDTH, WIDTH);
    TensorData parameter = transposed(weight);
    String name = "conditioner.embedders.1.model.text_projection";
    Path single = folder.resolve("sd_xl_base_1.0.safetensors");
    Safetensors.write(single, ImmutableMap.of(name, parameter), ImmutableMap.of());
    Path pipeline = folder.resolve("pipeline.safetensors");
    Safetensors.write(pipeline, ImmutableMap.of("text_encoder_2.text_projection.weight", weight), ImmutableMap.of());

    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, -0.9).build());
    Path fusedSingle = folder.resolve("fused-single.safetensors");
    Path fusedPipeline = folder.resolve("fused-pipeline.safetensors");
    assertThat(fuser.fuseInto(SafetensorsWeights.of(single, fusedSingle)).report().matched()).containsExactly(Map.entry(key, name));
    fuser.fuseInto(SafetensorsWeights.of(pipeline, fusedPipeline));
    try (SafetensorsFile a = SafetensorsFile.open(fusedSingle);
        SafetensorsFile b = SafetensorsFile.open(fusedPipeline)) {
      TensorData expected = transposed(b.tensor("text_encoder_2.text_projection.weight"));
      assertThat(a.tensor(name)).isEqualTo(expected).isNotEqualTo(parameter);
    }
    Path restored = folder.resolve("restored.safetensors");
    fuser.unfuseFrom(SafetensorsWeights.of(fusedSingle, restored));
    try (SafetensorsFile file = SafetensorsFile.open(restored)) {
      // fp16 subtraction need not give the bits back; it must stay within one rounding of them.
      for (int i : new int[] {0, 1, 1281, 1280 * 1280 - 1}) {
        assertThat(file.tensor(name).getDouble(i)).as("element %d", i)
            .isCloseTo(parameter.getDouble(i), org.assertj.core.data.Offset.offset(1e-3));
      }
    }
  }

  /** A square F16 matrix, transposed. */
  private static TensorData transposed(TensorData matrix) {
    int side = Math.toIntExact(matrix.dim(0));
    ByteBuffer bytes = ByteBuffer.allocate(Math.toIntExact(matrix.byteSize())).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    ByteBuffer source = matrix.bytes().order(java.nio.ByteOrder.LITTLE_ENDIAN);
    for (int row = 0; row < side; row++) {
      for (int column = 0; column < side; column++) {
        bytes.putShort((column * side + row) * 2, source.getShort((row * side + column) * 2));
      }
    }
    return TensorData.of(DType.F16, new long[] {side, side}, bytes);
  }
}

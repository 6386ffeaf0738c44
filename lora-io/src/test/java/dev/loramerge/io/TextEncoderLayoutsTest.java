package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * LoRAs on the text encoders of Flux.1 and SD3.5, in the names the trainers write and fused into
 * every naming their base weights are shipped in.
 *
 * <ul>
 *   <li>kohya: sd-scripts' {@code networks/lora_flux.py} writes CLIP-L as {@code lora_te1_} and T5
 *       ({@code --train_t5xxl}) as {@code lora_te3_} plus the underscored {@code T5EncoderModel}
 *       path ({@code lora_te3_encoder_block_0_layer_0_SelfAttention_q}); {@code
 *       networks/lora_sd3.py} writes {@code lora_te1_} (CLIP-L), {@code lora_te2_} (CLIP-G),
 *       {@code lora_te3_} (T5). OneTrainer writes Flux's T5 as {@code lora_te2_}, which ComfyUI's
 *       {@code comfy/lora.py} maps beside {@code lora_te3_}.
 *   <li>diffusers: the pipeline attribute names, {@code text_encoder_2} (Flux's T5) and {@code
 *       text_encoder_3} (SD3's T5) with PEFT's {@code lora_A}/{@code lora_B}. (diffusers itself
 *       drops T5 modules when it loads a Flux LoRA, in {@code lora_conversion_utils.py}: "T5-xxl
 *       keys found in the state dict, which are currently unsupported".)
 *   <li>base weights: {@code t5xxl_fp16.safetensors} as ComfyUI ships it (bare {@code
 *       encoder.block.N…}; sd-scripts' {@code merge_to_flux_model} reads the same keys), a
 *       diffusers pipeline ({@code text_encoder_2.encoder.block.N…}), and ComfyUI's single-file
 *       checkpoints ({@code text_encoders.t5xxl.transformer.encoder.block.N…}, {@code
 *       text_encoders.clip_l.transformer.text_model…}, {@code text_encoders.clip_g.transformer…}:
 *       the prefixes diffusers strips in {@code lora_conversion_utils.py}).
 * </ul>
 */
class TextEncoderLayoutsTest {
  private static final long T5 = 4096;
  private static final long T5_FF = 10240;
  private static final int RANK = 4;

  @TempDir Path folder;

  /** Gaussian values × 0.05 in {@code dtype}, made from float bits so large weights are cheap. */
  private static TensorData gaussian(Random random, DType dtype, long... shape) {
    int count = Math.toIntExact(TensorData.numel(shape));
    if (dtype == DType.F32) {
      ByteBuffer bytes = ByteBuffer.allocate(4 * count).order(ByteOrder.LITTLE_ENDIAN);
      for (int i = 0; i < count; i++) {
        bytes.putFloat((float) (random.nextGaussian() * 0.05));
      }
      return TensorData.of(DType.F32, shape, bytes.flip());
    }
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }

  private static void kohyaModule(Map<String, TensorData> tensors, Random random, String name, long in, long out) {
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {2}, DType.F32));
    tensors.put(name + ".lora_down.weight", gaussian(random, DType.BF16, RANK, in));
    tensors.put(name + ".lora_up.weight", gaussian(random, DType.BF16, out, RANK));
  }

  private Path write(String name, Map<String, TensorData> tensors) throws IOException {
    Path path = folder.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    return path;
  }

  /** A Flux LoRA from sd-scripts with --train_t5xxl: a transformer module, CLIP-L and T5. */
  private Path fluxKohya(String name, String t5Prefix, long seed) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_unet_double_blocks_0_img_attn_proj", 3072, 3072);
    kohyaModule(tensors, random, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768);
    kohyaModule(tensors, random, t5Prefix + "encoder_block_0_layer_0_SelfAttention_q", T5, T5);
    kohyaModule(tensors, random, t5Prefix + "encoder_block_23_layer_1_DenseReluDense_wi_1", T5, T5_FF);
    kohyaModule(tensors, random, t5Prefix + "encoder_block_23_layer_1_DenseReluDense_wo", T5_FF, T5);
    return write(name, tensors);
  }

  private static final ModuleKey FLUX_T5_Q = ModuleKey.parse("text_encoder_2.encoder.block.0.layer.0.SelfAttention.q");
  private static final ModuleKey FLUX_T5_WO = ModuleKey.parse("text_encoder_2.encoder.block.23.layer.1.DenseReluDense.wo");

  @Test
  void readsAFluxKohyaLoraWithT5AndConvertsItBothWays() throws IOException {
    Path kohya = fluxKohya("flux-t5", "lora_te3_", 1);
    LoraAdapter adapter = LoraFiles.read(kohya);
    assertThat(adapter.modules().keySet())
        .contains(FLUX_T5_Q, FLUX_T5_WO, ModuleKey.parse("text_encoder.text_model.encoder.layers.0.self_attn.q_proj"));
    assertThat(adapter.module(FLUX_T5_WO).orElseThrow().weightShape()).containsExactly(T5, T5_FF);
    assertThat(Architecture.detect(adapter)).contains(Architecture.flux());

    Path diffusers = folder.resolve("flux-t5-diffusers.safetensors");
    LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS);
    Path back = folder.resolve("flux-t5-back.safetensors");
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"))
          .isEqualTo(adapter.module(FLUX_T5_Q).orElseThrow().down());
      LoraFiles.write(LoraFiles.read(diffusers), back, LoraFormat.KOHYA);
    }
    try (SafetensorsFile original = SafetensorsFile.open(kohya);
        SafetensorsFile file = SafetensorsFile.open(back)) {
      for (String name : List.of(
          "lora_te3_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight",
          "lora_te3_encoder_block_23_layer_1_DenseReluDense_wo.lora_down.weight",
          "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight")) {
        assertThat(file.tensor(name)).as(name).isEqualTo(original.tensor(name));
      }
    }
  }

  @Test
  void readsOneTrainersFluxT5PrefixAsTheSameModules() throws IOException {
    LoraAdapter kohya = LoraFiles.read(fluxKohya("kohya", "lora_te3_", 2));
    LoraAdapter oneTrainer = LoraFiles.read(fluxKohya("onetrainer", "lora_te2_", 2));
    assertThat(oneTrainer.modules()).isEqualTo(kohya.modules());
  }

  @Test
  void mergesTwoFluxT5LorasExactly() throws IOException {
    LoraAdapter first = LoraFiles.read(fluxKohya("first", "lora_te3_", 3));
    Path diffusersPath = folder.resolve("second.safetensors");
    LoraFiles.write(LoraFiles.read(fluxKohya("second-kohya", "lora_te2_", 4)), diffusersPath, LoraFormat.DIFFUSERS);
    LoraAdapter second = LoraFiles.read(diffusersPath);
    LoraAdapter merged = LoraMerger.builder().add(first, 0.75).add(second, -0.5).dtype(DType.F64).build().merge();
    Path out = folder.resolve("merged.safetensors");
    LoraFiles.write(merged, out, LoraFormat.KOHYA);
    LoraAdapter back = LoraFiles.read(out);
    assertThat(Architecture.detect(back)).contains(Architecture.flux());
    LoraModule module = back.module(FLUX_T5_WO).orElseThrow();
    LoraModule a = first.module(FLUX_T5_WO).orElseThrow();
    LoraModule b = second.module(FLUX_T5_WO).orElseThrow();
    Random random = new Random(5);
    for (int sample = 0; sample < 200; sample++) {
      int row = random.nextInt((int) T5);
      int column = random.nextInt((int) T5_FF);
      double expected = 0.75 * delta(a, row, column) - 0.5 * delta(b, row, column);
      assertThat(delta(module, row, column)).as("ΔW[%d, %d]", row, column).isCloseTo(expected, org.assertj.core.data.Offset.offset(1e-12));
    }
  }

  /** s·Σₖ up[row, k]·down[k, column], in float64. */
  private static double delta(LoraModule module, int row, int column) {
    double sum = 0;
    for (int k = 0; k < module.rank(); k++) {
      sum += module.up().getDouble(row * (long) module.rank() + k) * module.down().getDouble(k * module.inFeatures() + column);
    }
    return module.scale() * sum;
  }

  @Test
  void fusesFluxT5IntoEveryBaseNamingWithTheSameBytes() throws IOException {
    Random random = new Random(6);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_te3_encoder_block_0_layer_0_SelfAttention_q", T5, T5);
    LoraAdapter adapter = LoraFiles.read(write("t5-q", tensors));
    TensorData q = gaussian(random, DType.F32, T5, T5);
    String bare = "encoder.block.0.layer.0.SelfAttention.q.weight";
    Map<String, String> namings = new LinkedHashMap<>();
    namings.put("t5xxl_fp16", bare);
    namings.put("pipeline", "text_encoder_2." + bare);
    namings.put("comfy-flux", "text_encoders.t5xxl.transformer." + bare);
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.8).build());
    TensorData reference = null;
    for (Map.Entry<String, String> naming : namings.entrySet()) {
      Path base = write(naming.getKey(), ImmutableMap.of(naming.getValue(), q));
      Path fused = folder.resolve(naming.getKey() + "-fused.safetensors");
      assertThat(fuser.fuseInto(SafetensorsWeights.of(base, fused)).report().matched())
          .containsExactly(Map.entry(FLUX_T5_Q, naming.getValue()));
      try (SafetensorsFile file = SafetensorsFile.open(fused)) {
        TensorData result = file.tensor(naming.getValue());
        if (reference == null) {
          reference = result;
          LoraModule module = adapter.module(FLUX_T5_Q).orElseThrow();
          for (int i : new int[] {0, 1, 4095, 4096 * 2048 + 17, 4096 * 4096 - 1}) {
            double exact = q.getDouble(i) + 0.8 * delta(module, i / 4096, i % 4096);
            assertThat(result.getDouble(i)).as("element %d", i).isEqualTo((double) (float) exact);
          }
        } else {
          assertThat(result).as(naming.getKey()).isEqualTo(reference);
        }
      }
    }
  }

  /** An SD3.5 LoRA from sd-scripts' lora_sd3.py on all three text encoders. */
  private Path sd3Kohya(long seed) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_te1_text_model_encoder_layers_11_self_attn_v_proj", 768, 768);
    kohyaModule(tensors, random, "lora_te2_text_model_encoder_layers_31_mlp_fc1", 1280, 5120);
    kohyaModule(tensors, random, "lora_te3_encoder_block_2_layer_0_SelfAttention_o", T5, T5);
    return write("sd3-te", tensors);
  }

  private static final ModuleKey SD3_CLIP_L = ModuleKey.parse("text_encoder.text_model.encoder.layers.11.self_attn.v_proj");
  private static final ModuleKey SD3_CLIP_G = ModuleKey.parse("text_encoder_2.text_model.encoder.layers.31.mlp.fc1");
  private static final ModuleKey SD3_T5 = ModuleKey.parse("text_encoder_3.encoder.block.2.layer.0.SelfAttention.o");

  @Test
  void readsAnSd3KohyaLoraOnItsThreeTextEncodersAndConvertsItBothWays() throws IOException {
    Path kohya = sd3Kohya(7);
    LoraAdapter adapter = LoraFiles.read(kohya);
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(SD3_CLIP_L, SD3_CLIP_G, SD3_T5);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd35Medium());
    Path diffusers = folder.resolve("sd3-diffusers.safetensors");
    LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS);
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("text_encoder_3.encoder.block.2.layer.0.SelfAttention.o.lora_B.weight"))
          .isEqualTo(adapter.module(SD3_T5).orElseThrow().up());
    }
    Path back = folder.resolve("sd3-back.safetensors");
    LoraFiles.write(LoraFiles.read(diffusers), back, LoraFormat.KOHYA);
    try (SafetensorsFile original = SafetensorsFile.open(kohya);
        SafetensorsFile file = SafetensorsFile.open(back)) {
      List<String> names = original.tensors().stream().map(TensorSpec::name).toList();
      assertThat(file.tensors().stream().map(TensorSpec::name).toList()).containsExactlyInAnyOrderElementsOf(names);
      for (String name : names) {
        assertThat(file.tensor(name).toDoubleArray()).as(name).isEqualTo(original.tensor(name).toDoubleArray());
      }
    }
  }

  @Test
  void fusesSd3TextEncodersIntoComfyUisSingleFileAsIntoThePipeline() throws IOException {
    LoraAdapter adapter = LoraFiles.read(sd3Kohya(8));
    Random random = new Random(9);
    Map<String, TensorData> weights = new LinkedHashMap<>();
    weights.put("text_model.encoder.layers.11.self_attn.v_proj.weight", gaussian(random, DType.F16, 768, 768));
    weights.put("text_model.encoder.layers.31.mlp.fc1.weight", gaussian(random, DType.F16, 5120, 1280));
    weights.put("encoder.block.2.layer.0.SelfAttention.o.weight", gaussian(random, DType.F16, T5, T5));
    String[][] names = {
      {"text_encoder.text_model.encoder.layers.11.self_attn.v_proj.weight", "text_encoders.clip_l.transformer.text_model.encoder.layers.11.self_attn.v_proj.weight"},
      {"text_encoder_2.text_model.encoder.layers.31.mlp.fc1.weight", "text_encoders.clip_g.transformer.text_model.encoder.layers.31.mlp.fc1.weight"},
      {"text_encoder_3.encoder.block.2.layer.0.SelfAttention.o.weight", "text_encoders.t5xxl.transformer.encoder.block.2.layer.0.SelfAttention.o.weight"},
    };
    List<TensorData> values = List.copyOf(weights.values());
    Map<String, TensorData> pipeline = new LinkedHashMap<>();
    Map<String, TensorData> single = new LinkedHashMap<>();
    for (int i = 0; i < names.length; i++) {
      pipeline.put(names[i][0], values.get(i));
      single.put(names[i][1], values.get(i));
    }
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 1.0).build());
    Path fusedPipeline = folder.resolve("pipeline-fused.safetensors");
    Path fusedSingle = folder.resolve("single-fused.safetensors");
    assertThat(fuser.fuseInto(SafetensorsWeights.of(write("pipeline", pipeline), fusedPipeline)).report().matched()).hasSize(3);
    assertThat(fuser.fuseInto(SafetensorsWeights.of(write("sd3.5_medium_incl_clips", single), fusedSingle)).report().matched())
        .containsEntry(SD3_CLIP_L, names[0][1])
        .containsEntry(SD3_CLIP_G, names[1][1])
        .containsEntry(SD3_T5, names[2][1]);
    try (SafetensorsFile a = SafetensorsFile.open(fusedPipeline);
        SafetensorsFile b = SafetensorsFile.open(fusedSingle)) {
      for (int i = 0; i < names.length; i++) {
        assertThat(b.tensor(names[i][1])).as(names[i][1]).isEqualTo(a.tensor(names[i][0])).isNotEqualTo(values.get(i));
      }
    }
  }

  @Test
  void aT5OnlyFileIsReadAsSd3sWhenTheBaseOrTheArchitectureSaysSo() throws IOException {
    Random random = new Random(10);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_te3_encoder_block_4_layer_0_SelfAttention_v", T5, T5);
    Path lora = write("t5-only", tensors);
    ModuleKey sd3 = ModuleKey.parse("text_encoder_3.encoder.block.4.layer.0.SelfAttention.v");
    assertThat(LoraFiles.read(lora).modules().keySet())
        .as("both fit; Flux comes first").containsExactly(ModuleKey.parse("text_encoder_2.encoder.block.4.layer.0.SelfAttention.v"));
    String weight = "text_encoder_3.encoder.block.4.layer.0.SelfAttention.v.weight";
    LoraAdapter byBase = LoraFiles.read(lora, LoraReadOptions.builder().baseKeys(List.of(weight)).build());
    assertThat(byBase.modules().keySet()).containsExactly(sd3);
    LoraAdapter byArchitecture = LoraFiles.read(lora, LoraReadOptions.builder().architecture(Architecture.sd35Large()).build());
    assertThat(byArchitecture.modules().keySet()).containsExactly(sd3);
    Path base = write("sd3-pipeline", ImmutableMap.of(weight, gaussian(random, DType.BF16, T5, T5)));
    assertThat(LoraFuser.of(LoraMerger.builder().add(byBase, 1).build())
            .fuseInto(SafetensorsWeights.of(base, folder.resolve("sd3-fused.safetensors"))).report().matched())
        .containsExactly(Map.entry(sd3, weight));
  }

  @Test
  void aT5AdapterRoundTripsThroughAPeftFolder() throws IOException {
    Random random = new Random(11);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_te3_encoder_block_9_layer_1_DenseReluDense_wi_0", T5, T5_FF);
    LoraAdapter adapter = LoraFiles.read(write("t5-peft-source", tensors));
    Path peft = folder.resolve("t5-peft");
    LoraFiles.write(adapter, peft, LoraFormat.PEFT);
    assertThat(LoraFiles.read(peft).modules()).isEqualTo(adapter.modules());
    LoraAdapter sd3 = LoraFiles.read(peft, LoraReadOptions.builder().architecture(Architecture.sd35Medium()).build());
    assertThat(sd3.modules().keySet())
        .containsExactly(ModuleKey.parse("text_encoder_3.encoder.block.9.layer.1.DenseReluDense.wi_0"));
  }
}

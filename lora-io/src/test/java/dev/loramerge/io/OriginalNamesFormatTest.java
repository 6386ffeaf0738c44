package dev.loramerge.io;

import static dev.loramerge.io.TestTensors.bf16;
import static dev.loramerge.io.TestTensors.gaussian;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.AdapterKind;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
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
 * Flux.1 LoRAs in BFL's original module names, built in code with Flux.1-dev's real tensor names
 * and shapes (hidden 3072, MLP 12288, 19 double and 38 single blocks), read, converted, merged
 * and fused.
 *
 * <ul>
 *   <li>XLabs (x-flux): {@code double_blocks.N.processor.qkv_lora1.down.weight} / {@code
 *       .up.weight}, mapped as diffusers' {@code _convert_xlabs_flux_lora_to_diffusers} ({@code
 *       loaders/lora_conversion_utils.py}) maps them: {@code qkv_lora1} is {@code to_q/to_k/to_v}
 *       (the up split by rows, the down shared), {@code proj_lora1} {@code to_out.0}, {@code
 *       qkv_lora2} {@code add_q/k/v_proj}, {@code proj_lora2} {@code to_add_out}; a single block's
 *       {@code qkv_lora} is {@code to_q/to_k/to_v} and {@code proj_lora} {@code proj_out}. No
 *       alphas: diffusers' {@code FluxLoraLoaderMixin.lora_state_dict} returns none for XLabs
 *       ("xlabs doesn't use `alpha`"), so the scale is 1.
 *   <li>ComfyUI: {@code diffusion_model.} or {@code model.diffusion_model.} before the original
 *       names, with {@code .lora_up.weight}/{@code .lora_down.weight}/{@code .alpha}, {@code
 *       .lora_A.weight}/{@code .lora_B.weight}, {@code .diff} and {@code .diff_b}, as {@code
 *       comfy/lora.py} ({@code model_lora_keys_unet}, {@code load_lora}) and {@code
 *       comfy/weight_adapter/lora.py} read them; {@code .diff} is added to the weight, {@code .diff_b}
 *       to the bias.
 *   <li>BFL control LoRAs (FLUX.1-Canny-dev-lora, FLUX.1-Depth-dev-lora): bare original names with
 *       {@code lora_A}/{@code lora_B} and {@code lora_B.bias}, read by diffusers'
 *       {@code _convert_bfl_flux_control_lora_to_diffusers} into PEFT modules with {@code
 *       lora_bias} (PEFT adds {@code scaling·lora_B.bias}; no alphas, so the scale is 1); the
 *       attention norms' {@code .scale} tensors replace the base's ({@code _load_norm_into_transformer})
 *       and {@code img_in} widens x_embedder from 64 to 128 input features ({@code
 *       _maybe_expand_transformer_param_shape_or_error_}), read at its width.
 * </ul>
 */
class OriginalNamesFormatTest {
  private static final long INNER = 3072;
  private static final long MLP = 4 * INNER;
  private static final int RANK = 4;

  @TempDir Path folder;

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  private static void factors(Map<String, TensorData> tensors, Random random, String down, String up, long in, long out) {
    tensors.put(down, gaussian(random, DType.BF16, RANK, in));
    tensors.put(up, gaussian(random, DType.BF16, out, RANK));
  }

  private Path write(String name, Map<String, TensorData> tensors) throws IOException {
    Path path = folder.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    return path;
  }

  /** An XLabs file: both streams of double blocks 0 and 18, single blocks 0 (q, k, v) and 37 (linear2). */
  private static Map<String, TensorData> xlabs(long seed) {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String module : new String[] {"qkv_lora1", "proj_lora1", "qkv_lora2", "proj_lora2"}) {
      String name = "double_blocks.0.processor." + module;
      factors(tensors, random, name + ".down.weight", name + ".up.weight", INNER, module.startsWith("qkv") ? 3 * INNER : INNER);
    }
    factors(tensors, random, "double_blocks.18.processor.qkv_lora1.down.weight", "double_blocks.18.processor.qkv_lora1.up.weight",
        INNER, 3 * INNER);
    factors(tensors, random, "single_blocks.0.processor.qkv_lora.down.weight", "single_blocks.0.processor.qkv_lora.up.weight",
        INNER, 3 * INNER);
    factors(tensors, random, "single_blocks.37.processor.proj_lora.down.weight", "single_blocks.37.processor.proj_lora.up.weight",
        INNER + MLP, INNER);
    return tensors;
  }

  /** A ComfyUI file under {@code prefix}: kohya-style and PEFT-style factors, a full and a bias difference. */
  private static Map<String, TensorData> comfy(String prefix, long seed) {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String qkv = prefix + "double_blocks.0.img_attn.qkv";
    factors(tensors, random, qkv + ".lora_down.weight", qkv + ".lora_up.weight", INNER, 3 * INNER);
    tensors.put(qkv + ".alpha", TensorData.ofDoubles(new double[] {8}, DType.F32));
    String proj = prefix + "double_blocks.0.img_attn.proj";
    factors(tensors, random, proj + ".lora_A.weight", proj + ".lora_B.weight", INNER, INNER);
    tensors.put(proj + ".diff_b", gaussian(random, DType.BF16, INNER));
    tensors.put(prefix + "time_in.in_layer.diff", gaussian(random, DType.BF16, INNER, 256));
    String modulation = prefix + "final_layer.adaLN_modulation.1";
    factors(tensors, random, modulation + ".lora_down.weight", modulation + ".lora_up.weight", INNER, 2 * INNER);
    return tensors;
  }

  /** A BFL control LoRA's tensors for double block 0, single block 0 and img_in, with biases and norm scales. */
  private static Map<String, TensorData> control(long seed, boolean withNormsAndInput) {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String[][] modules = {
      {"double_blocks.0.img_attn.qkv", Long.toString(INNER), Long.toString(3 * INNER)},
      {"double_blocks.0.img_attn.proj", Long.toString(INNER), Long.toString(INNER)},
      {"single_blocks.0.linear1", Long.toString(INNER), Long.toString(3 * INNER + MLP)},
    };
    for (String[] module : modules) {
      long out = Long.parseLong(module[2]);
      factors(tensors, random, module[0] + ".lora_A.weight", module[0] + ".lora_B.weight", Long.parseLong(module[1]), out);
      tensors.put(module[0] + ".lora_B.bias", gaussian(random, DType.BF16, out));
    }
    if (withNormsAndInput) {
      for (String norm : new String[] {
          "double_blocks.0.img_attn.norm.query_norm.scale", "single_blocks.0.norm.key_norm.scale"}) {
        tensors.put(norm, gaussian(random, DType.BF16, 128));
      }
      factors(tensors, random, "img_in.lora_A.weight", "img_in.lora_B.weight", 128, INNER);
      tensors.put("img_in.lora_B.bias", gaussian(random, DType.BF16, INNER));
    }
    return tensors;
  }

  /** Rows {@code [from, from + rows)} of a row-major [*, columns] tensor, as a tensor of its dtype. */
  private static TensorData rows(TensorData tensor, long from, long rows) {
    long columns = tensor.rank() == 1 ? 1 : tensor.dim(1);
    int bytes = Math.toIntExact(columns * tensor.dtype().byteSize());
    java.nio.ByteBuffer slice = tensor.bytes().position(Math.toIntExact(from * bytes)).limit(Math.toIntExact((from + rows) * bytes)).slice();
    return TensorData.of(tensor.dtype(), tensor.rank() == 1 ? new long[] {rows} : new long[] {rows, columns}, slice);
  }

  @Test
  void xlabsReadsAsTheModulesDiffusersConvertsItTo() throws IOException {
    Map<String, TensorData> tensors = xlabs(1);
    Path path = write("xlabs", tensors);
    assertThat(LoraFiles.detect(path)).isEqualTo(LoraFormat.XLABS);
    LoraAdapter adapter = LoraFiles.read(path);
    assertThat(Architecture.detect(adapter)).contains(Architecture.flux());
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(
        key("transformer_blocks.0.attn.to_q"), key("transformer_blocks.0.attn.to_k"), key("transformer_blocks.0.attn.to_v"),
        key("transformer_blocks.0.attn.to_out.0"), key("transformer_blocks.0.attn.add_q_proj"),
        key("transformer_blocks.0.attn.add_k_proj"), key("transformer_blocks.0.attn.add_v_proj"),
        key("transformer_blocks.0.attn.to_add_out"), key("transformer_blocks.18.attn.to_q"),
        key("transformer_blocks.18.attn.to_k"), key("transformer_blocks.18.attn.to_v"),
        key("single_transformer_blocks.0.attn.to_q"), key("single_transformer_blocks.0.attn.to_k"),
        key("single_transformer_blocks.0.attn.to_v"), key("single_transformer_blocks.37.proj_out"));
    assertThat(adapter.modules().values()).allSatisfy(module -> assertThat(module.scale()).as("%s", module.key()).isEqualTo(1.0));
    String qkv2 = "double_blocks.0.processor.qkv_lora2";
    LoraModule addK = adapter.module(key("transformer_blocks.0.attn.add_k_proj")).orElseThrow();
    assertThat(addK.down()).isEqualTo(tensors.get(qkv2 + ".down.weight"));
    assertThat(addK.up()).isEqualTo(rows(tensors.get(qkv2 + ".up.weight"), INNER, INNER));
    LoraModule singleV = adapter.module(key("single_transformer_blocks.0.attn.to_v")).orElseThrow();
    assertThat(singleV.up()).isEqualTo(rows(tensors.get("single_blocks.0.processor.qkv_lora.up.weight"), 2 * INNER, INNER));
    assertThat(adapter.module(key("transformer_blocks.0.attn.to_add_out")).orElseThrow().up())
        .isEqualTo(tensors.get("double_blocks.0.processor.proj_lora2.up.weight"));
  }

  @Test
  void xlabsConvertsToKohyaDiffusersAndPeftAndBackWithTheSameFactors() throws IOException {
    Map<String, TensorData> tensors = xlabs(2);
    LoraAdapter adapter = LoraFiles.read(write("xlabs", tensors));
    Path kohya = folder.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      assertThat(file.tensor("lora_unet_double_blocks_0_txt_attn_qkv.lora_up.weight"))
          .isEqualTo(tensors.get("double_blocks.0.processor.qkv_lora2.up.weight"));
      // linear1 is q, k, v and the MLP: XLabs adapts q, k, v, so the MLP's rows are zero.
      TensorData linear1 = file.tensor("lora_unet_single_blocks_0_linear1.lora_up.weight");
      assertThat(rows(linear1, 0, 3 * INNER)).isEqualTo(tensors.get("single_blocks.0.processor.qkv_lora.up.weight"));
      assertThat(rows(linear1, 3 * INNER, MLP).toDoubleArray()).containsOnly(0.0);
    }
    LoraAdapter fromKohya = LoraFiles.read(kohya);
    assertSameModules(adapter, fromKohya);
    assertThat(fromKohya.module(key("single_transformer_blocks.0.proj_mlp")).orElseThrow().up().toDoubleArray()).containsOnly(0.0);

    Path diffusers = folder.resolve("diffusers.safetensors");
    LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS);
    LoraAdapter fromDiffusers = LoraFiles.read(diffusers);
    assertThat(fromDiffusers.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertSameModules(adapter, fromDiffusers);
    // A PEFT folder holds the transformer alone.
    Path peft = folder.resolve("peft");
    LoraFiles.write(adapter, peft, LoraFormat.PEFT);
    assertThat(java.nio.file.Files.readString(peft.resolve(PeftFormat.CONFIG))).doesNotContain("lora_bias");
    LoraAdapter fromPeft = LoraFiles.read(peft);
    assertThat(fromPeft.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertSameModules(adapter, fromPeft);
  }

  /** Every module of {@code expected} is in {@code actual} with the same factors, bias difference and scale. */
  private static void assertSameModules(LoraAdapter expected, LoraAdapter actual) {
    for (LoraModule module : expected.modules().values()) {
      LoraModule read = actual.module(module.key()).orElseThrow(() -> new AssertionError("missing " + module.key()));
      assertThat(read.adapterKind()).as("%s kind", module.key()).isEqualTo(module.adapterKind());
      assertThat(read.scale()).as("%s scale", module.key()).isEqualTo(module.scale());
      assertThat(read.biasDiff()).as("%s bias", module.key()).isEqualTo(module.biasDiff());
      if (module.adapterKind() == AdapterKind.LORA) {
        assertThat(read.down()).as("%s down", module.key()).isEqualTo(module.down());
        assertThat(read.up()).as("%s up", module.key()).isEqualTo(module.up());
      } else {
        assertThat(read.parts()).as("%s parts", module.key()).isEqualTo(module.parts());
      }
    }
  }

  @Test
  void comfyUiKeysReadWithEitherPrefixAsLoraFullAndBiasDifferences() throws IOException {
    for (String prefix : new String[] {"diffusion_model.", "model.diffusion_model."}) {
      Map<String, TensorData> tensors = comfy(prefix, 3);
      Path path = write("comfy", tensors);
      assertThat(LoraFiles.detect(path)).isEqualTo(LoraFormat.COMFYUI);
      LoraAdapter adapter = LoraFiles.read(path);
      assertThat(Architecture.detect(adapter)).as(prefix).contains(Architecture.flux());
      LoraModule q = adapter.module(key("transformer_blocks.0.attn.to_q")).orElseThrow();
      assertThat(q.scale()).isEqualTo(2.0);
      LoraModule proj = adapter.module(key("transformer_blocks.0.attn.to_out.0")).orElseThrow();
      assertThat(proj.scale()).isEqualTo(1.0);
      assertThat(proj.biasDiff()).contains(tensors.get(prefix + "double_blocks.0.img_attn.proj.diff_b"));
      LoraModule time = adapter.module(key("time_text_embed.timestep_embedder.linear_1")).orElseThrow();
      assertThat(time.adapterKind()).isEqualTo(AdapterKind.FULL);
      assertThat(time.parts().get("diff")).isEqualTo(tensors.get(prefix + "time_in.in_layer.diff"));
      // BFL's final modulation is (shift, scale); diffusers' norm_out.linear is (scale, shift).
      LoraModule normOut = adapter.module(key("norm_out.linear")).orElseThrow();
      TensorData up = tensors.get(prefix + "final_layer.adaLN_modulation.1.lora_up.weight");
      assertThat(rows(normOut.up(), 0, INNER)).isEqualTo(rows(up, INNER, INNER));
      assertThat(rows(normOut.up(), INNER, INNER)).isEqualTo(rows(up, 0, INNER));
    }
  }

  @Test
  void comfyUiClipLModulesReadAsFluxsTextEncoderAndConvertToKohya() throws IOException {
    Map<String, TensorData> tensors = comfy("diffusion_model.", 19);
    String q = "text_encoders.clip_l.transformer.text_model.encoder.layers.3.self_attn.q_proj";
    factors(tensors, new Random(20), q + ".lora_down.weight", q + ".lora_up.weight", 768, 768);
    LoraAdapter adapter = LoraFiles.read(write("comfy-clip", tensors));
    ModuleKey clipQ = ModuleKey.of(Component.TEXT_ENCODER, "text_model.encoder.layers.3.self_attn.q_proj");
    assertThat(adapter.module(clipQ).orElseThrow().up()).isEqualTo(tensors.get(q + ".lora_up.weight"));
    assertThat(Architecture.detect(adapter)).contains(Architecture.flux());
    Path kohya = folder.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      assertThat(file.tensor("lora_te1_text_model_encoder_layers_3_self_attn_q_proj.lora_up.weight"))
          .isEqualTo(tensors.get(q + ".lora_up.weight"));
    }
  }

  /** ComfyUI's T5 keys (comfy/lora.py, {@code model_lora_keys_clip}) with Flux's transformer: its second text encoder. */
  @Test
  void comfyUiT5ModulesReadAsFluxsSecondTextEncoder() throws IOException {
    Map<String, TensorData> tensors = comfy("diffusion_model.", 21);
    String q = "text_encoders.t5xxl.transformer.encoder.block.7.layer.0.SelfAttention.q";
    factors(tensors, new Random(22), q + ".lora_down.weight", q + ".lora_up.weight", 4096, 4096);
    LoraAdapter adapter = LoraFiles.read(write("comfy-t5", tensors));
    ModuleKey t5q = ModuleKey.of(Component.TEXT_ENCODER_2, "encoder.block.7.layer.0.SelfAttention.q");
    assertThat(adapter.module(t5q).orElseThrow().up()).isEqualTo(tensors.get(q + ".lora_up.weight"));
    assertThat(Architecture.detect(adapter)).contains(Architecture.flux());
  }

  @Test
  void comfyUiConvertsToKohyaAndBackAndItsLoraModulesToDiffusers() throws IOException {
    LoraAdapter adapter = LoraFiles.read(write("comfy", comfy("diffusion_model.", 4)));
    Path kohya = folder.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      assertThat(file.tensor("lora_unet_time_in_in_layer.diff")).isNotNull();
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_proj.diff_b")).isNotNull();
    }
    LoraAdapter back = LoraFiles.read(kohya);
    assertThat(back.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertSameModules(adapter, back);

    // The diffusers layout holds LoRA factors only: the full and the bias difference are refused by name.
    Path diffusers = folder.resolve("diffusers.safetensors");
    assertThatThrownBy(() -> LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("diffusers layout cannot hold");
    LoraAdapter loras = adapter.toBuilder()
        .remove(key("time_text_embed.timestep_embedder.linear_1")).remove(key("transformer_blocks.0.attn.to_out.0")).build();
    LoraFiles.write(loras, diffusers, LoraFormat.DIFFUSERS);
    LoraAdapter fromDiffusers = LoraFiles.read(diffusers);
    assertThat(fromDiffusers.modules().keySet()).isEqualTo(loras.modules().keySet());
    assertSameModules(loras, fromDiffusers);
  }

  @Test
  void controlLoraWidenedInputIsReadAtItsWidthAndItsNormScalesAreReplacements() throws IOException {
    Map<String, TensorData> tensors = control(5, true);
    Path path = write("canny", tensors);
    assertThat(LoraFiles.detect(path)).isEqualTo(LoraFormat.BFL);
    LoraAdapter adapter = LoraFiles.read(path);
    LoraModule imgIn = adapter.module(key("x_embedder")).orElseThrow();
    assertThat(imgIn.weightShape()).as("128 input features: a fuse widens the base's 64").containsExactly(INNER, 128);
    assertThat(imgIn.down()).isEqualTo(tensors.get("img_in.lora_A.weight"));
    assertThat(adapter.size()).as("3 + 1 + 4 LoRA parts, img_in and 2 norm replacements").isEqualTo(3 + 1 + 4 + 1 + 2);
    LoraModule normQ = adapter.module(key("transformer_blocks.0.attn.norm_q")).orElseThrow();
    assertThat(normQ.adapterKind()).isEqualTo(AdapterKind.REPLACEMENT);
    assertThat(normQ.replacementWeight()).isEqualTo(tensors.get("double_blocks.0.img_attn.norm.query_norm.scale"));
    assertThat(adapter.module(key("single_transformer_blocks.0.attn.norm_k")).orElseThrow().replacementWeight())
        .isEqualTo(tensors.get("single_blocks.0.norm.key_norm.scale"));
  }

  @Test
  void controlLoraBiasesAreBiasDifferencesSplitWithTheFusedWeights() throws IOException {
    Map<String, TensorData> tensors = control(6, false);
    LoraAdapter adapter = LoraFiles.read(write("canny", tensors));
    assertThat(Architecture.detect(adapter)).contains(Architecture.flux());
    LoraModule k = adapter.module(key("transformer_blocks.0.attn.to_k")).orElseThrow();
    assertThat(k.scale()).isEqualTo(1.0);
    assertThat(k.down()).isEqualTo(tensors.get("double_blocks.0.img_attn.qkv.lora_A.weight"));
    assertThat(k.up()).isEqualTo(rows(tensors.get("double_blocks.0.img_attn.qkv.lora_B.weight"), INNER, INNER));
    assertThat(k.biasDiff()).contains(rows(tensors.get("double_blocks.0.img_attn.qkv.lora_B.bias"), INNER, INNER));
    LoraModule mlp = adapter.module(key("single_transformer_blocks.0.proj_mlp")).orElseThrow();
    assertThat(mlp.biasDiff()).contains(rows(tensors.get("single_blocks.0.linear1.lora_B.bias"), 3 * INNER, MLP));
    assertThat(adapter.module(key("transformer_blocks.0.attn.to_out.0")).orElseThrow().biasDiff())
        .contains(tensors.get("double_blocks.0.img_attn.proj.lora_B.bias"));
  }

  @Test
  void controlLoraConvertsToKohyaDiffusersAndPeftWithItsBiasesAndBack() throws IOException {
    Map<String, TensorData> tensors = control(16, false);
    LoraAdapter adapter = LoraFiles.read(write("canny", tensors));
    Path kohya = folder.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      // The fused weights' biases are LyCORIS's diff_b on the fused names, bit for bit.
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_qkv.diff_b"))
          .isEqualTo(tensors.get("double_blocks.0.img_attn.qkv.lora_B.bias"));
      assertThat(file.tensor("lora_unet_single_blocks_0_linear1.diff_b")).isEqualTo(tensors.get("single_blocks.0.linear1.lora_B.bias"));
      assertThat(file.tensor("lora_unet_single_blocks_0_linear1.lora_up.weight")).isEqualTo(tensors.get("single_blocks.0.linear1.lora_B.weight"));
    }
    LoraAdapter back = LoraFiles.read(kohya);
    assertThat(back.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertSameModules(adapter, back);
    // diffusers holds them as PEFT's lora_B.bias (lora_bias), as it loads the control LoRAs.
    Path diffusers = folder.resolve("diffusers.safetensors");
    LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS);
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      assertThat(file.tensor("transformer.single_transformer_blocks.0.proj_mlp.lora_B.bias"))
          .isEqualTo(rows(tensors.get("single_blocks.0.linear1.lora_B.bias"), 3 * INNER, MLP));
      assertThat(file.metadata().get("lora_adapter_metadata")).contains("\"transformer.lora_bias\":true");
    }
    LoraAdapter fromDiffusers = LoraFiles.read(diffusers);
    assertThat(fromDiffusers.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertSameModules(adapter, fromDiffusers);
    // A PEFT folder holds the transformer alone, with lora_bias in adapter_config.json.
    Path peft = folder.resolve("peft");
    LoraFiles.write(adapter, peft, LoraFormat.PEFT);
    assertThat(java.nio.file.Files.readString(peft.resolve(PeftFormat.CONFIG))).contains("\"lora_bias\" : true");
    LoraAdapter fromPeft = LoraFiles.read(peft);
    assertThat(fromPeft.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertSameModules(adapter, fromPeft);
  }

  @Test
  void aBiasDifferenceAtAnotherScaleIsWrittenAsLoraBBiasOnlyWhereDividingIsExact() throws IOException {
    Random random = new Random(24);
    TensorData down = gaussian(random, DType.BF16, RANK, INNER);
    TensorData up = gaussian(random, DType.BF16, INNER, RANK);
    TensorData bias = gaussian(random, DType.BF16, INNER);
    ModuleKey proj = key("transformer_blocks.0.attn.to_out.0");
    // Scale 2 (alpha 8, rank 4): bias / 2 is exact, and diffusers reads back 2 · (bias / 2).
    LoraAdapter doubled = LoraAdapter.builder().name("doubled").add(LoraModule.of(proj, down, up, 8).withBiasDiff(bias)).build();
    Path path = folder.resolve("doubled.safetensors");
    LoraFiles.write(doubled, path, LoraFormat.DIFFUSERS);
    LoraModule back = LoraFiles.read(path).module(proj).orElseThrow();
    assertThat(back.biasDiff().orElseThrow().toDoubleArray()).containsExactly(bias.toDoubleArray());
    // Scale 3 on float64 values of full precision: some value / 3 · 3 is not the value, so
    // lora_B.bias cannot hold the difference exactly.
    TensorData wide = gaussian(random, DType.F64, INNER);
    LoraAdapter tripled = LoraAdapter.builder().name("tripled").add(LoraModule.of(proj, down, up, 12).withBiasDiff(wide)).build();
    assertThatThrownBy(() -> LoraFiles.write(tripled, folder.resolve("tripled.safetensors"), LoraFormat.DIFFUSERS))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("transformer_blocks.0.attn.to_out.0")
        .hasMessageContaining("write it in the kohya layout");
  }

  @Test
  void aFusedWeightOfAnotherKindIsRefusedNamingIt() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("diffusion_model.double_blocks.0.img_attn.qkv.diff", gaussian(new Random(7), DType.BF16, 3 * INNER, INNER));
    Path path = write("comfy-qkv-diff", tensors);
    assertThatThrownBy(() -> LoraFiles.read(path))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("diffusion_model.double_blocks.0.img_attn.qkv")
        .hasMessageContaining("full difference");
  }

  @Test
  void mergesAnXlabsAndAComfyUiLoraExactly() throws IOException {
    LoraAdapter xlabs = LoraFiles.read(write("xlabs", xlabs(8)));
    LoraAdapter comfy = LoraFiles.read(write("comfy", comfy("diffusion_model.", 9))).toBuilder()
        .remove(key("time_text_embed.timestep_embedder.linear_1")).remove(key("transformer_blocks.0.attn.to_out.0")).build();
    LoraAdapter merged = LoraMerger.builder().add(xlabs, 0.75).add(comfy, -0.5).dtype(DType.F64).build().merge();
    Path out = folder.resolve("merged.safetensors");
    LoraFiles.write(merged, out, LoraFormat.KOHYA);
    LoraAdapter back = LoraFiles.read(out);
    for (ModuleKey key : merged.modules().keySet()) {
      LoraModule module = back.module(key).orElseThrow();
      long out0 = module.outFeatures();
      for (long row : new long[] {0, 1, out0 / 2 + 3, out0 - 1}) {
        double[] expected = new double[Math.toIntExact(module.inFeatures())];
        add(expected, xlabs, key, row, 0.75);
        add(expected, comfy, key, row, -0.5);
        double[] actual = row(module, row);
        for (int i = 0; i < expected.length; i++) {
          if (Math.abs(actual[i] - expected[i]) > 1e-12) {
            assertThat(actual[i]).as("%s row %d element %d", key, row, i).isEqualTo(expected[i]);
          }
        }
      }
    }
    assertThat(back.modules().keySet()).containsAll(xlabs.modules().keySet()).containsAll(comfy.modules().keySet());
  }

  @Test
  void mergesTwoBflLorasExactlyAndRefusesTheBiasesALoraCannotHold() throws IOException {
    Map<String, TensorData> first = control(21, false);
    Map<String, TensorData> second = control(22, false);
    first.keySet().removeIf(name -> name.endsWith(".lora_B.bias"));
    second.keySet().removeIf(name -> name.endsWith(".lora_B.bias") || name.startsWith("single_blocks"));
    LoraAdapter a = LoraFiles.read(write("bfl-a", first));
    LoraAdapter b = LoraFiles.read(write("bfl-b", second));
    LoraAdapter merged = LoraMerger.builder().add(a, 0.5).add(b, 1.5).dtype(DType.F64).build().merge();
    for (ModuleKey key : merged.modules().keySet()) {
      LoraModule module = merged.module(key).orElseThrow();
      for (long row : new long[] {0, module.outFeatures() - 1}) {
        double[] expected = new double[Math.toIntExact(module.inFeatures())];
        add(expected, a, key, row, 0.5);
        add(expected, b, key, row, 1.5);
        double[] actual = row(module, row);
        for (int i = 0; i < expected.length; i++) {
          if (Math.abs(actual[i] - expected[i]) > 1e-12) {
            assertThat(actual[i]).as("%s row %d element %d", key, row, i).isEqualTo(expected[i]);
          }
        }
      }
    }
    LoraAdapter withBiases = LoraFiles.read(write("canny", control(23, false)));
    assertThatThrownBy(() -> LoraMerger.builder().add(withBiases, 1).add(a, 1).build().merge())
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("a LoRA cannot hold its bias difference");
  }

  private static void add(double[] sum, LoraAdapter adapter, ModuleKey key, long row, double weight) {
    adapter.module(key).ifPresent(module -> {
      double[] delta = row(module, row);
      for (int i = 0; i < sum.length; i++) {
        sum[i] += weight * delta[i];
      }
    });
  }

  /** Row {@code row} of s·B·A in float64, from the module's factors. */
  private static double[] row(LoraModule module, long row) {
    return row(module.down(), module.up(), module.scale(), row);
  }

  /** Row {@code row} of s·up·down in float64. */
  private static double[] row(TensorData down, TensorData up, double scale, long row) {
    int rank = Math.toIntExact(down.dim(0));
    int in = Math.toIntExact(down.dim(1));
    double[] a = down.toDoubleArray();
    double[] b = new double[rank];
    up.readDoubles(Math.toIntExact(row * rank), b, rank);
    double[] result = new double[in];
    for (int p = 0; p < rank; p++) {
      double factor = scale * b[p];
      for (int i = 0; i < in; i++) {
        result[i] += factor * a[p * in + i];
      }
    }
    return result;
  }

  /**
   * Checks every element of {@code fused}; the weights used (0.75, 0.5, 1) keep w·s·b·a exact in
   * float64 for bf16 factors, so that an exact tie of bf16 is a tie here too, and rounds to even
   * as in the fuse.
   *
   * <p>Checks every element of {@code fused} against bf16(W + w·s·up·down) for rows {@code [from,
   * from + rows)} of the file's factors, computed here in float64 from the file's own tensors.
   */
  private static void assertFusedRows(
      TensorData fused, TensorData base, long fusedRow, TensorData down, TensorData up, long factorRow, long rows,
      double weightTimesScale, String label) {
    long in = down.dim(1);
    for (long r = 0; r < rows; r++) {
      double[] delta = row(down, up, weightTimesScale, factorRow + r);
      for (int i = 0; i < in; i++) {
        long element = (fusedRow + r) * in + i;
        double expected = bf16(base.getDouble(element) + delta[i]);
        double actual = fused.getDouble(element);
        if (actual != expected) {
          assertThat(actual).as("%s row %d element %d", label, fusedRow + r, i).isEqualTo(expected);
        }
      }
    }
  }

  @Test
  void xlabsFusesIntoBflAndDiffusersNamedBasesAsTheExactSumRoundedOnce() throws IOException {
    Map<String, TensorData> tensors = xlabs(10);
    LoraAdapter adapter = LoraFiles.read(write("xlabs", tensors)).toBuilder()
        .remove(key("transformer_blocks.18.attn.to_q")).remove(key("transformer_blocks.18.attn.to_k"))
        .remove(key("transformer_blocks.18.attn.to_v")).remove(key("single_transformer_blocks.37.proj_out"))
        .remove(key("single_transformer_blocks.0.attn.to_q")).remove(key("single_transformer_blocks.0.attn.to_k"))
        .remove(key("single_transformer_blocks.0.attn.to_v")).build();
    Random random = new Random(11);
    TensorData qkv = gaussian(random, DType.BF16, 3 * INNER, INNER);
    TensorData txtQkv = gaussian(random, DType.BF16, 3 * INNER, INNER);
    TensorData proj = gaussian(random, DType.BF16, INNER, INNER);
    TensorData txtProj = gaussian(random, DType.BF16, INNER, INNER);
    // BFL's names bare (flux1-dev.safetensors) and under ComfyUI's prefixes give the same bytes.
    TensorData firstQkv = null;
    for (String prefix : new String[] {"", "model.diffusion_model.", "diffusion_model."}) {
      Path base = folder.resolve("flux1-dev.safetensors");
      Safetensors.write(base, ImmutableMap.of(
          prefix + "double_blocks.0.img_attn.qkv.weight", qkv, prefix + "double_blocks.0.txt_attn.qkv.weight", txtQkv,
          prefix + "double_blocks.0.img_attn.proj.weight", proj, prefix + "double_blocks.0.txt_attn.proj.weight", txtProj),
          ImmutableMap.of());
      Path out = folder.resolve("fused" + prefix + "safetensors");
      LoraFuser.of(LoraMerger.builder().add(adapter, 0.75).build()).fuseInto(SafetensorsWeights.of(base, out));
      try (SafetensorsFile fused = SafetensorsFile.open(out)) {
        if (firstQkv != null) {
          assertThat(fused.tensor(prefix + "double_blocks.0.img_attn.qkv.weight")).as(prefix).isEqualTo(firstQkv);
          continue;
        }
        String qkv1 = "double_blocks.0.processor.qkv_lora1";
        String qkv2 = "double_blocks.0.processor.qkv_lora2";
        String proj2 = "double_blocks.0.processor.proj_lora2";
        assertFusedRows(fused.tensor("double_blocks.0.img_attn.qkv.weight"), qkv, 0,
            tensors.get(qkv1 + ".down.weight"), tensors.get(qkv1 + ".up.weight"), 0, 3 * INNER, 0.75, "img qkv");
        assertFusedRows(fused.tensor("double_blocks.0.txt_attn.qkv.weight"), txtQkv, 0,
            tensors.get(qkv2 + ".down.weight"), tensors.get(qkv2 + ".up.weight"), 0, 3 * INNER, 0.75, "txt qkv");
        assertFusedRows(fused.tensor("double_blocks.0.txt_attn.proj.weight"), txtProj, 0,
            tensors.get(proj2 + ".down.weight"), tensors.get(proj2 + ".up.weight"), 0, INNER, 0.75, "txt proj");
        firstQkv = TensorData.of(DType.BF16, qkv.shape(),
            java.nio.ByteBuffer.allocate(Math.toIntExact(qkv.byteSize())).put(fused.tensor("double_blocks.0.img_attn.qkv.weight").bytes()).flip());
      }
    }
    Path diffusersBase = folder.resolve("transformer.safetensors");
    Map<String, TensorData> diffusersWeights = new LinkedHashMap<>();
    String[] parts = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) {
      diffusersWeights.put("transformer_blocks.0.attn." + parts[i] + ".weight", rows(qkv, i * INNER, INNER));
      diffusersWeights.put("transformer_blocks.0.attn.add_" + parts[i].substring(3) + "_proj.weight", rows(txtQkv, i * INNER, INNER));
    }
    diffusersWeights.put("transformer_blocks.0.attn.to_out.0.weight", proj);
    diffusersWeights.put("transformer_blocks.0.attn.to_add_out.weight", txtProj);
    Safetensors.write(diffusersBase, diffusersWeights, ImmutableMap.of());
    Path out = folder.resolve("fused-diffusers.safetensors");
    LoraFuser.of(LoraMerger.builder().add(adapter, 0.75).build()).fuseInto(SafetensorsWeights.of(diffusersBase, out));
    try (SafetensorsFile fused = SafetensorsFile.open(out)) {
      String qkv2 = "double_blocks.0.processor.qkv_lora2";
      assertFusedRows(fused.tensor("transformer_blocks.0.attn.add_v_proj.weight"), rows(txtQkv, 2 * INNER, INNER), 0,
          tensors.get(qkv2 + ".down.weight"), tensors.get(qkv2 + ".up.weight"), 2 * INNER, INNER, 0.75, "add_v_proj");
      String proj1 = "double_blocks.0.processor.proj_lora1";
      assertFusedRows(fused.tensor("transformer_blocks.0.attn.to_out.0.weight"), proj, 0,
          tensors.get(proj1 + ".down.weight"), tensors.get(proj1 + ".up.weight"), 0, INNER, 0.75, "to_out.0");
    }
  }

  @Test
  void comfyUiFullAndBiasDifferencesFuseIntoBflAndDiffusersNamedBases() throws IOException {
    Map<String, TensorData> tensors = comfy("diffusion_model.", 12);
    LoraAdapter adapter = LoraFiles.read(write("comfy", tensors)).toBuilder()
        .remove(key("norm_out.linear")).remove(key("transformer_blocks.0.attn.to_q"))
        .remove(key("transformer_blocks.0.attn.to_k")).remove(key("transformer_blocks.0.attn.to_v")).build();
    Random random = new Random(13);
    TensorData proj = gaussian(random, DType.BF16, INNER, INNER);
    TensorData projBias = gaussian(random, DType.BF16, INNER);
    TensorData time = gaussian(random, DType.BF16, INNER, 256);
    Path bfl = folder.resolve("flux1-dev.safetensors");
    Safetensors.write(bfl, ImmutableMap.of(
        "model.diffusion_model.double_blocks.0.img_attn.proj.weight", proj,
        "model.diffusion_model.double_blocks.0.img_attn.proj.bias", projBias,
        "model.diffusion_model.time_in.in_layer.weight", time), ImmutableMap.of());
    Path diffusers = folder.resolve("transformer.safetensors");
    Safetensors.write(diffusers, ImmutableMap.of(
        "transformer_blocks.0.attn.to_out.0.weight", proj, "transformer_blocks.0.attn.to_out.0.bias", projBias,
        "time_text_embed.timestep_embedder.linear_1.weight", time), ImmutableMap.of());
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.5).build());
    Path fusedBfl = folder.resolve("fused-bfl.safetensors");
    Path fusedDiffusers = folder.resolve("fused-diffusers.safetensors");
    fuser.fuseInto(SafetensorsWeights.of(bfl, fusedBfl));
    fuser.fuseInto(SafetensorsWeights.of(diffusers, fusedDiffusers));
    String p = "diffusion_model.double_blocks.0.img_attn.proj";
    try (SafetensorsFile a = SafetensorsFile.open(fusedBfl);
        SafetensorsFile b = SafetensorsFile.open(fusedDiffusers)) {
      assertFusedRows(a.tensor("model.diffusion_model.double_blocks.0.img_attn.proj.weight"), proj, 0,
          tensors.get(p + ".lora_A.weight"), tensors.get(p + ".lora_B.weight"), 0, INNER, 0.5, "proj");
      assertThat(b.tensor("transformer_blocks.0.attn.to_out.0.weight"))
          .isEqualTo(a.tensor("model.diffusion_model.double_blocks.0.img_attn.proj.weight"));
      TensorData diffB = tensors.get(p + ".diff_b");
      TensorData diff = tensors.get("diffusion_model.time_in.in_layer.diff");
      TensorData fusedBias = a.tensor("model.diffusion_model.double_blocks.0.img_attn.proj.bias");
      TensorData fusedTime = a.tensor("model.diffusion_model.time_in.in_layer.weight");
      for (int i = 0; i < INNER; i++) {
        assertThat(fusedBias.getDouble(i)).as("bias %d", i).isEqualTo(bf16(projBias.getDouble(i) + 0.5 * diffB.getDouble(i)));
      }
      for (int i = 0; i < INNER * 256; i++) {
        double expected = bf16(time.getDouble(i) + 0.5 * diff.getDouble(i));
        if (fusedTime.getDouble(i) != expected) {
          assertThat(fusedTime.getDouble(i)).as("time_in element %d", i).isEqualTo(expected);
        }
      }
      assertThat(b.tensor("transformer_blocks.0.attn.to_out.0.bias")).isEqualTo(fusedBias);
      assertThat(b.tensor("time_text_embed.timestep_embedder.linear_1.weight")).isEqualTo(fusedTime);
    }
  }

  @Test
  void controlLoraFusesWeightsAndBiasesIntoADiffusersNamedBase() throws IOException {
    Map<String, TensorData> tensors = control(14, false);
    LoraAdapter adapter = LoraFiles.read(write("canny", tensors)).toBuilder()
        .remove(key("single_transformer_blocks.0.attn.to_q")).remove(key("single_transformer_blocks.0.attn.to_k"))
        .remove(key("single_transformer_blocks.0.attn.to_v")).remove(key("single_transformer_blocks.0.proj_mlp")).build();
    Random random = new Random(15);
    Map<String, TensorData> weights = new LinkedHashMap<>();
    for (String part : new String[] {"to_q", "to_k", "to_v", "to_out.0"}) {
      weights.put("transformer_blocks.0.attn." + part + ".weight", gaussian(random, DType.BF16, INNER, INNER));
      weights.put("transformer_blocks.0.attn." + part + ".bias", gaussian(random, DType.BF16, INNER));
    }
    Path base = folder.resolve("transformer.safetensors");
    Safetensors.write(base, weights, ImmutableMap.of());
    Path out = folder.resolve("fused.safetensors");
    LoraFuser.of(LoraMerger.builder().add(adapter, 1).build()).fuseInto(SafetensorsWeights.of(base, out));
    try (SafetensorsFile fused = SafetensorsFile.open(out)) {
      String qkv = "double_blocks.0.img_attn.qkv";
      assertFusedRows(fused.tensor("transformer_blocks.0.attn.to_v.weight"), weights.get("transformer_blocks.0.attn.to_v.weight"), 0,
          tensors.get(qkv + ".lora_A.weight"), tensors.get(qkv + ".lora_B.weight"), 2 * INNER, INNER, 1, "to_v");
      TensorData bias = tensors.get(qkv + ".lora_B.bias");
      TensorData vBias = weights.get("transformer_blocks.0.attn.to_v.bias");
      TensorData fusedBias = fused.tensor("transformer_blocks.0.attn.to_v.bias");
      for (int i = 0; i < INNER; i++) {
        assertThat(fusedBias.getDouble(i)).as("to_v bias %d", i).isEqualTo(bf16(vBias.getDouble(i) + bias.getDouble(2 * INNER + i)));
      }
    }
  }

  @Test
  void controlLoraBiasesFuseIntoABflNamedBasesFusedBiasWithTheSameBytesAsIntoDiffusersNames() throws IOException {
    Map<String, TensorData> tensors = control(17, false);
    LoraAdapter adapter = LoraFiles.read(write("canny", tensors));
    Random random = new Random(18);
    TensorData qkv = gaussian(random, DType.BF16, 3 * INNER, INNER);
    TensorData qkvBias = gaussian(random, DType.BF16, 3 * INNER);
    TensorData linear1 = gaussian(random, DType.BF16, 3 * INNER + MLP, INNER);
    TensorData linear1Bias = gaussian(random, DType.BF16, 3 * INNER + MLP);
    Path bfl = folder.resolve("flux1-dev.safetensors");
    Map<String, TensorData> bflWeights = new LinkedHashMap<>();
    bflWeights.put("double_blocks.0.img_attn.qkv.weight", qkv);
    bflWeights.put("double_blocks.0.img_attn.qkv.bias", qkvBias);
    bflWeights.put("double_blocks.0.img_attn.proj.weight", gaussian(random, DType.BF16, INNER, INNER));
    bflWeights.put("double_blocks.0.img_attn.proj.bias", gaussian(random, DType.BF16, INNER));
    bflWeights.put("single_blocks.0.linear1.weight", linear1);
    bflWeights.put("single_blocks.0.linear1.bias", linear1Bias);
    Safetensors.write(bfl, bflWeights, ImmutableMap.of());
    Map<String, TensorData> diffusersWeights = new LinkedHashMap<>();
    String[] parts = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) {
      diffusersWeights.put("transformer_blocks.0.attn." + parts[i] + ".weight", rows(qkv, i * INNER, INNER));
      diffusersWeights.put("transformer_blocks.0.attn." + parts[i] + ".bias", rows(qkvBias, i * INNER, INNER));
      diffusersWeights.put("single_transformer_blocks.0.attn." + parts[i] + ".weight", rows(linear1, i * INNER, INNER));
      diffusersWeights.put("single_transformer_blocks.0.attn." + parts[i] + ".bias", rows(linear1Bias, i * INNER, INNER));
    }
    diffusersWeights.put("single_transformer_blocks.0.proj_mlp.weight", rows(linear1, 3 * INNER, MLP));
    diffusersWeights.put("single_transformer_blocks.0.proj_mlp.bias", rows(linear1Bias, 3 * INNER, MLP));
    diffusersWeights.put("transformer_blocks.0.attn.to_out.0.weight", bflWeights.get("double_blocks.0.img_attn.proj.weight"));
    diffusersWeights.put("transformer_blocks.0.attn.to_out.0.bias", bflWeights.get("double_blocks.0.img_attn.proj.bias"));
    Path diffusers = folder.resolve("transformer.safetensors");
    Safetensors.write(diffusers, diffusersWeights, ImmutableMap.of());
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.75).build());
    Path fusedBfl = folder.resolve("fused-bfl.safetensors");
    Path fusedDiffusers = folder.resolve("fused-diffusers.safetensors");
    fuser.fuseInto(SafetensorsWeights.of(bfl, fusedBfl));
    fuser.fuseInto(SafetensorsWeights.of(diffusers, fusedDiffusers));
    try (SafetensorsFile a = SafetensorsFile.open(fusedBfl);
        SafetensorsFile b = SafetensorsFile.open(fusedDiffusers)) {
      for (String tensor : new String[] {"weight", "bias"}) {
        assertThat(rows(a.tensor("double_blocks.0.img_attn.qkv." + tensor), INNER, INNER))
            .as("qkv %s rows of k", tensor).isEqualTo(b.tensor("transformer_blocks.0.attn.to_k." + tensor));
        assertThat(rows(a.tensor("single_blocks.0.linear1." + tensor), 3 * INNER, MLP))
            .as("linear1 %s rows of the MLP", tensor).isEqualTo(b.tensor("single_transformer_blocks.0.proj_mlp." + tensor));
      }
      String qkvName = "double_blocks.0.img_attn.qkv";
      assertFusedRows(a.tensor(qkvName + ".weight"), qkv, 0, tensors.get(qkvName + ".lora_A.weight"),
          tensors.get(qkvName + ".lora_B.weight"), 0, 3 * INNER, 0.75, "qkv");
      TensorData bias = tensors.get("single_blocks.0.linear1.lora_B.bias");
      TensorData fusedBias = a.tensor("single_blocks.0.linear1.bias");
      for (int i = 0; i < 3 * INNER + MLP; i++) {
        assertThat(fusedBias.getDouble(i)).as("linear1 bias %d", i).isEqualTo(bf16(linear1Bias.getDouble(i) + 0.75 * bias.getDouble(i)));
      }
    }
    // Unfused by subtraction, as diffusers' unfuse_lora: the same on both namings.
    Path restoredBfl = folder.resolve("restored-bfl.safetensors");
    Path restoredDiffusers = folder.resolve("restored-diffusers.safetensors");
    fuser.unfuseFrom(SafetensorsWeights.of(fusedBfl, restoredBfl));
    fuser.unfuseFrom(SafetensorsWeights.of(fusedDiffusers, restoredDiffusers));
    try (SafetensorsFile a = SafetensorsFile.open(restoredBfl);
        SafetensorsFile b = SafetensorsFile.open(restoredDiffusers)) {
      assertThat(rows(a.tensor("double_blocks.0.img_attn.qkv.bias"), 2 * INNER, INNER))
          .isEqualTo(b.tensor("transformer_blocks.0.attn.to_v.bias"));
    }
  }

  @Test
  void xlabsAndControlLayoutsAreReadNotWritten() {
    LoraAdapter empty = LoraAdapter.builder().name("x").build();
    assertThatThrownBy(() -> LoraFiles.write(empty, folder.resolve("x.safetensors"), LoraFormat.XLABS))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("the xlabs layout is read, not written; write peft, kohya or diffusers");
    assertThat(LoraFormat.BFL.writable()).isFalse();
    assertThat(LoraFormat.KOHYA.writable()).isTrue();
  }
}

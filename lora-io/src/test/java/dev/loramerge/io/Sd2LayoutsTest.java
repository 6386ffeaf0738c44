package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SD2.x LoRAs in the diffusers and PEFT layouts, with the real SD2.1 module names and shapes.
 *
 * <p>Shapes: diffusers' {@code UNet2DConditionModel} built from {@code
 * stabilityai/stable-diffusion-2-1}'s {@code unet/config.json} ({@code cross_attention_dim} 1024,
 * so {@code attn2.to_k/to_v} are [C, 1024]; {@code attention_head_dim} [5, 10, 20, 20]; {@code
 * use_linear_projection} true, so {@code proj_in}/{@code proj_out} are Linear [C, C] where SD1.5
 * has 1×1 convolutions [C, C, 1, 1]: {@code Transformer2DModel} in diffusers' {@code
 * models/transformers/transformer_2d.py}), and its {@code text_encoder/config.json}, transformers'
 * {@code CLIPTextModel} for OpenCLIP ViT-H (hidden 1024, intermediate 4096, 23 layers: the 24th is
 * not used by SD2, whose conditioning is the penultimate layer).
 *
 * <p>Key names: a diffusers pipeline file ({@code pytorch_lora_weights.safetensors}) is {@code
 * unet.<path>.lora_A.weight} / {@code text_encoder.<path>.lora_B.weight} with the alphas in the
 * header's {@code lora_adapter_metadata} as {@code unet.lora_alpha} (diffusers {@code
 * loaders/lora_base.py}, {@code LORA_ADAPTER_METADATA_KEY} and {@code _pack_dict_with_prefix});
 * without it diffusers' alpha is the rank. A PEFT folder is {@code adapter_config.json} plus
 * {@code adapter_model.safetensors} with {@code base_model.model.<path>.lora_A.weight} (PEFT
 * {@code utils/save_and_load.py} {@code get_peft_model_state_dict}; the scale is {@code
 * lora_alpha / r}, {@code alpha_pattern} matching a dotted suffix of the path, {@code
 * tuners/lora/model.py} and {@code utils/other.py} {@code get_pattern_key}).
 *
 * <p>Original single-file names ({@code v2-1_768-ema-pruned.safetensors}): the UNet under {@code
 * model.diffusion_model.} in ldm's {@code openaimodel.py} layout ({@code input_blocks.1.1} is {@code
 * down_blocks.0.attentions.0}, {@code middle_block.1} is {@code mid_block.attentions.0}, {@code
 * output_blocks.11.1} is {@code up_blocks.3.attentions.2}); the text encoder in OpenCLIP's names
 * under {@code cond_stage_model.model.transformer.resblocks.N} with q, k, v stacked in {@code
 * attn.in_proj_weight} and {@code mlp.c_fc} for {@code mlp.fc1} (diffusers {@code
 * loaders/single_file_utils.py} {@code convert_open_clip_checkpoint}).
 *
 * <p>Every fused value is checked against W + Σ wᵢ·(αᵢ/rᵢ)·BᵢAᵢ computed here in float64 from the
 * factors as written, rounded once to float32.
 */
class Sd2LayoutsTest {
  private static final long WIDTH = 1024;
  private static final String TE_LAYER = "text_model.encoder.layers.22.";

  /** A module of the fixtures: its path, base-weight shape, and name in the original checkpoint. */
  private record Module(String component, String path, long out, long in, String original) {
    ModuleKey key() {
      return ModuleKey.parse(component + "." + path);
    }
  }

  private static final List<Module> UNET = List.of(
      new Module("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 320, WIDTH,
          "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
      new Module("unet", "down_blocks.0.attentions.0.proj_in", 320, 320,
          "model.diffusion_model.input_blocks.1.1.proj_in.weight"),
      new Module("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0", 640, 640,
          "model.diffusion_model.input_blocks.5.1.transformer_blocks.0.attn1.to_out.0.weight"),
      new Module("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_v", 1280, WIDTH,
          "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight"),
      new Module("unet", "up_blocks.3.attentions.2.proj_out", 320, 320,
          "model.diffusion_model.output_blocks.11.1.proj_out.weight"));

  /** The text-encoder modules; q, k and v share the stacked {@code in_proj_weight} (rows 0, 1024, 2048). */
  private static final List<Module> TEXT_ENCODER = List.of(
      new Module("text_encoder", TE_LAYER + "self_attn.q_proj", WIDTH, WIDTH, null),
      new Module("text_encoder", TE_LAYER + "self_attn.k_proj", WIDTH, WIDTH, null),
      new Module("text_encoder", TE_LAYER + "self_attn.v_proj", WIDTH, WIDTH, null),
      new Module("text_encoder", TE_LAYER + "mlp.fc1", 4 * WIDTH, WIDTH,
          "cond_stage_model.model.transformer.resblocks.22.mlp.c_fc.weight"));

  private static final String IN_PROJ = "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight";

  @TempDir Path folder;

  /** The factors written to the fixtures, by module, with their scale α/r. */
  private record Factors(TensorData down, TensorData up, double scale) {
    /** (α/r)·B·A in float64, from the factors' values. */
    double[] delta() {
      return product(false);
    }

    /** (α/r)·|B|·|A|: what bounds the rounding of a product of these factors. */
    double[] magnitude() {
      return product(true);
    }

    private double[] product(boolean absolute) {
      int out = Math.toIntExact(up.shape()[0]);
      int rank = Math.toIntExact(down.shape()[0]);
      int in = Math.toIntExact(down.shape()[1]);
      double[] result = new double[out * in];
      for (int i = 0; i < out; i++) {
        for (int k = 0; k < rank; k++) {
          double b = up.getDouble((long) i * rank + k) * scale;
          for (int j = 0; j < in; j++) {
            double a = down.getDouble((long) k * in + j);
            result[i * in + j] += absolute ? Math.abs(b * a) : b * a;
          }
        }
      }
      return result;
    }
  }

  private final Map<ModuleKey, Factors> diffusersFactors = new LinkedHashMap<>();
  private final Map<ModuleKey, Factors> peftFactors = new LinkedHashMap<>();

  /**
   * A diffusers pipeline file on the UNet (rank 4, {@code unet.lora_alpha} 8 in the metadata) and
   * the text encoder (rank 8, no alpha: scale 1).
   */
  private Path diffusersFile() throws IOException {
    Random random = new Random(21);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (Module module : UNET) {
      factors(tensors, random, module, module.component() + "." + module.path(), 4, 8.0 / 4, diffusersFactors);
    }
    for (Module module : TEXT_ENCODER) {
      factors(tensors, random, module, module.component() + "." + module.path(), 8, 1, diffusersFactors);
    }
    Path path = folder.resolve("pytorch_lora_weights.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of(
        "format", "pt",
        DiffusersFormat.METADATA_KEY, "{\"unet.r\": 4, \"unet.lora_alpha\": 8, \"unet.peft_type\": \"LORA\"}"));
    return path;
  }

  /**
   * A PEFT folder on the UNet (r 4, lora_alpha 4, {@code alpha_pattern} giving {@code proj_in} 2)
   * and one on the text encoder (r 4, lora_alpha 16): PEFT folders hold one model each.
   */
  private Path peftFolder(String name, List<Module> modules, String config, Map<String, Double> alphas)
      throws IOException {
    Random random = new Random(name.hashCode());
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (Module module : modules) {
      double alpha = alphas.getOrDefault(module.path().substring(module.path().lastIndexOf('.') + 1), alphas.get(""));
      factors(tensors, random, module, "base_model.model." + module.path(), 4, alpha / 4, peftFactors);
    }
    Path peft = folder.resolve(name);
    Files.createDirectories(peft);
    Safetensors.write(peft.resolve("adapter_model.safetensors"), tensors, ImmutableMap.of("format", "pt"));
    Files.writeString(peft.resolve("adapter_config.json"), config, StandardCharsets.UTF_8);
    return peft;
  }

  private Path peftUnet() throws IOException {
    return peftFolder("sd2-unet-peft", UNET.subList(0, 3),
        "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 4, \"alpha_pattern\": {\"proj_in\": 2},"
            + " \"rank_pattern\": {}, \"target_modules\": [\"to_k\", \"proj_in\", \"to_out.0\"], \"use_rslora\": false}",
        Map.of("", 4.0, "proj_in", 2.0));
  }

  private Path peftTextEncoder() throws IOException {
    return peftFolder("sd2-te-peft", TEXT_ENCODER,
        "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 16,"
            + " \"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"fc1\"]}",
        Map.of("", 16.0));
  }

  private static void factors(Map<String, TensorData> tensors, Random random, Module module, String name, int rank,
      double scale, Map<ModuleKey, Factors> written) {
    TensorData down = gaussian(random, rank, module.in());
    TensorData up = gaussian(random, module.out(), rank);
    tensors.put(name + ".lora_A.weight", down);
    tensors.put(name + ".lora_B.weight", up);
    written.put(module.key(), new Factors(down, up, scale));
  }

  @Test
  void diffusersAndPeftSd2LorasAreDetectedAsSd2WithTheirScales() throws IOException {
    LoraFiles.AdapterFile diffusers = LoraFiles.readFile(diffusersFile(), LoraReadOptions.defaults());
    assertThat(diffusers.format()).isEqualTo(LoraFormat.DIFFUSERS);
    assertThat(Architecture.detect(diffusers.adapter())).as("a diffusers SD2.x LoRA").contains(Architecture.sd2());
    assertThat(diffusers.adapter().modules().keySet()).containsExactlyInAnyOrderElementsOf(diffusersFactors.keySet());
    for (Map.Entry<ModuleKey, Factors> entry : diffusersFactors.entrySet()) {
      LoraModule module = diffusers.adapter().module(entry.getKey()).orElseThrow();
      assertThat(module.scale()).as("scale of %s", entry.getKey()).isEqualTo(entry.getValue().scale());
      assertThat(Architecture.sd2().module(entry.getKey())).as("%s is an SD2.x module", entry.getKey()).isPresent();
      assertThat(module.weightShape()).as("base shape of %s", entry.getKey())
          .isEqualTo(Architecture.sd2().module(entry.getKey()).orElseThrow().weightShape());
    }
    // SD1.5 has the same paths, but 1×1 convolutions for proj_in/proj_out and 768-wide keys.
    assertThat(Architecture.sd15().module(ModuleKey.parse("unet.down_blocks.0.attentions.0.proj_in")).orElseThrow()
        .weightShape()).containsExactly(320, 320, 1, 1);

    LoraFiles.AdapterFile unet = LoraFiles.readFile(peftUnet(), LoraReadOptions.defaults());
    LoraFiles.AdapterFile textEncoder = LoraFiles.readFile(peftTextEncoder(), LoraReadOptions.defaults());
    assertThat(unet.format()).isEqualTo(LoraFormat.PEFT);
    assertThat(Architecture.detect(unet.adapter())).as("a PEFT SD2.x UNet LoRA").contains(Architecture.sd2());
    assertThat(Architecture.detect(textEncoder.adapter())).as("a PEFT SD2.x text-encoder LoRA").contains(Architecture.sd2());
    assertThat(unet.moduleNames()).containsEntry(UNET.get(1).key(), "base_model.model.down_blocks.0.attentions.0.proj_in");
    for (LoraFiles.AdapterFile file : List.of(unet, textEncoder)) {
      for (LoraModule module : file.adapter().modules().values()) {
        assertThat(module.scale()).as("scale of %s", module.key()).isEqualTo(peftFactors.get(module.key()).scale());
      }
    }
    assertThat(textEncoder.adapter().modules().keySet())
        .containsExactlyInAnyOrderElementsOf(TEXT_ENCODER.stream().map(Module::key).toList());
  }

  @Test
  void convertsToKohyaAndBackKeepingTheFactorsBytes() throws IOException {
    LoraAdapter diffusers = LoraFiles.read(diffusersFile());
    Path kohya = folder.resolve("sd2-kohya.safetensors");
    LoraFiles.write(diffusers, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      // kohya's SD2 names are SD1.5's: lora_unet_ + the underscored diffusers path, lora_te_ + the text-model path.
      assertThat(file.tensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight").shape())
          .containsExactly(4, 320);
      assertThat(file.tensor("lora_te_text_model_encoder_layers_22_mlp_fc1.lora_up.weight").shape())
          .containsExactly(4 * WIDTH, 8);
    }
    LoraAdapter fromKohya = LoraFiles.read(kohya);
    assertThat(LoraFiles.detect(kohya)).isEqualTo(LoraFormat.KOHYA);
    assertThat(Architecture.detect(fromKohya)).contains(Architecture.sd2());
    Path back = folder.resolve("sd2-back.safetensors");
    LoraFiles.write(fromKohya, back, LoraFormat.DIFFUSERS);
    LoraAdapter roundTrip = LoraFiles.read(back);
    assertSameUpdates(roundTrip, diffusers);

    LoraAdapter peft = LoraFiles.read(peftUnet());
    Path peftKohya = folder.resolve("sd2-peft-kohya.safetensors");
    LoraFiles.write(peft, peftKohya, LoraFormat.KOHYA);
    Path peftBack = folder.resolve("sd2-peft-back");
    LoraFiles.write(LoraFiles.read(peftKohya), peftBack, LoraFormat.PEFT);
    assertSameUpdates(LoraFiles.read(peftBack), peft);
  }

  private static void assertSameUpdates(LoraAdapter actual, LoraAdapter expected) {
    assertThat(actual.modules().keySet()).isEqualTo(expected.modules().keySet());
    for (LoraModule module : expected.modules().values()) {
      LoraModule other = actual.module(module.key()).orElseThrow();
      assertThat(other.down().bytes()).as("lora_A of %s", module.key()).isEqualTo(module.down().bytes());
      assertThat(other.up().bytes()).as("lora_B of %s", module.key()).isEqualTo(module.up().bytes());
      assertThat(other.scale()).as("scale of %s", module.key()).isEqualTo(module.scale());
    }
  }

  @Test
  void mergesADiffusersAndAPeftSd2LoraAsTheWeightedSum() throws IOException {
    LoraAdapter merged = LoraMerger.builder()
        .add(LoraFiles.read(diffusersFile()), 0.7)
        .add(LoraFiles.read(peftUnet()), 0.5)
        .build().merge();
    assertThat(Architecture.detect(merged)).contains(Architecture.sd2());
    Path out = folder.resolve("merged.safetensors");
    LoraFiles.write(merged, out, LoraFormat.DIFFUSERS);
    LoraAdapter read = LoraFiles.read(out);
    for (Module module : UNET) {
      Factors first = diffusersFactors.get(module.key());
      Factors other = peftFactors.get(module.key());
      double[] expected = first.delta();
      double[] bound = first.magnitude();
      double[] second = other != null ? other.delta() : new double[expected.length];
      double[] secondBound = other != null ? other.magnitude() : new double[expected.length];
      double[] actual = read.module(module.key()).orElseThrow().deltaF64();
      for (int i = 0; i < expected.length; i++) {
        double sum = 0.7 * expected[i] + 0.5 * second[i];
        // cat joins the factors in float32 as libtorch would: each lora_B times its coefficient
        // (weight × α/r, itself a float32 scalar), two roundings of 2^-24 each, so every term of
        // B·A moves by at most 2^-23 of its size (CatAlgorithm.mergeValues).
        double tolerance = 0x1p-23 * (0.7 * bound[i] + 0.5 * secondBound[i]);
        assertThat(actual[i]).as("%s element %d", module.key(), i).isCloseTo(sum, org.assertj.core.data.Offset.offset(tolerance));
      }
    }
  }

  @Test
  void fusesIntoTheDiffusersAndTheOriginalNamesWithTheSameValuesRoundedOnce() throws IOException {
    LoraMerger merger = LoraMerger.builder()
        .add(LoraFiles.read(diffusersFile()), 0.7)
        .add(LoraFiles.read(peftUnet()), 0.5)
        .add(LoraFiles.read(peftTextEncoder()), 0.25)
        .build();
    Random random = new Random(22);
    Map<ModuleKey, TensorData> originals = new LinkedHashMap<>();
    Map<String, TensorData> pipelineTensors = new LinkedHashMap<>();
    Map<String, TensorData> singleTensors = new LinkedHashMap<>();
    for (Module module : UNET) {
      TensorData weight = gaussian(random, module.out(), module.in());
      originals.put(module.key(), weight);
      pipelineTensors.put(module.component() + "." + module.path() + ".weight", weight);
      singleTensors.put(module.original(), weight);
    }
    ByteBuffer inProj = ByteBuffer.allocate(Math.toIntExact(3 * WIDTH * WIDTH * 4));
    for (Module module : TEXT_ENCODER) {
      TensorData weight = gaussian(random, module.out(), module.in());
      originals.put(module.key(), weight);
      pipelineTensors.put(module.component() + "." + module.path() + ".weight", weight);
      if (module.original() == null) {
        inProj.put(weight.bytes());
      } else {
        singleTensors.put(module.original(), weight);
      }
    }
    singleTensors.put(IN_PROJ, TensorData.of(DType.F32, new long[] {3 * WIDTH, WIDTH}, inProj.flip()));
    Path pipeline = folder.resolve("sd2-pipeline.safetensors");
    Path single = folder.resolve("v2-1_768-ema-pruned.safetensors");
    Safetensors.write(pipeline, pipelineTensors, ImmutableMap.of());
    Safetensors.write(single, singleTensors, ImmutableMap.of());

    Path fusedPipeline = folder.resolve("fused-pipeline.safetensors");
    Path fusedSingle = folder.resolve("fused-single.safetensors");
    LoraFuser fuser = LoraFuser.of(merger);
    assertThat(fuser.fuseInto(SafetensorsWeights.of(pipeline, fusedPipeline)).report().unmatched()).isEmpty();
    Map<ModuleKey, String> matched = fuser.fuseInto(SafetensorsWeights.of(single, fusedSingle)).report().matched();
    for (Module module : UNET) {
      assertThat(matched).containsEntry(module.key(), module.original());
    }
    assertThat(matched).containsEntry(TEXT_ENCODER.get(1).key(), IN_PROJ).hasSize(UNET.size() + TEXT_ENCODER.size());

    try (SafetensorsFile byPipeline = SafetensorsFile.open(fusedPipeline);
        SafetensorsFile bySingle = SafetensorsFile.open(fusedSingle)) {
      for (Module module : UNET) {
        double[] expected = expectedFused(module, originals.get(module.key()));
        assertFused(byPipeline.tensor(module.component() + "." + module.path() + ".weight"), 0, expected, module + " (pipeline)");
        assertFused(bySingle.tensor(module.original()), 0, expected, module + " (single file)");
      }
      for (int part = 0; part < TEXT_ENCODER.size(); part++) {
        Module module = TEXT_ENCODER.get(part);
        double[] expected = expectedFused(module, originals.get(module.key()));
        assertFused(byPipeline.tensor(module.component() + "." + module.path() + ".weight"), 0, expected, module + " (pipeline)");
        if (module.original() == null) {
          assertFused(bySingle.tensor(IN_PROJ), part * WIDTH * WIDTH, expected, module + " (in_proj_weight)");
        } else {
          assertFused(bySingle.tensor(module.original()), 0, expected, module + " (single file)");
        }
      }
    }
  }

  /**
   * A UNet LoRA on self-attention only ({@code attn1}, [C, C] in both) has shapes SD1.5 shares, so
   * detection names SD1.5, the first that fits; ldm's original names are the same for both UNets,
   * so it still fuses into an SD2.1 single file, rounded once.
   */
  @Test
  void aSelfAttentionOnlyLoraFitsSd15TooAndFusesIntoSd2sOriginalNames() throws IOException {
    Module module = UNET.get(2);
    Random random = new Random(23);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    factors(tensors, random, module, module.component() + "." + module.path(), 4, 1, diffusersFactors);
    Path lora = folder.resolve("sd2-attn1.safetensors");
    Safetensors.write(lora, tensors, ImmutableMap.of("format", "pt"));
    LoraAdapter adapter = LoraFiles.read(lora);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd15());

    TensorData original = gaussian(random, module.out(), module.in());
    Path base = folder.resolve("v2-1_768-ema-pruned.safetensors");
    Safetensors.write(base, ImmutableMap.of(module.original(), original), ImmutableMap.of());
    Path fused = folder.resolve("fused.safetensors");
    assertThat(LoraFuser.of(LoraMerger.builder().add(adapter, 0.7).build())
            .fuseInto(SafetensorsWeights.of(base, fused)).report().matched())
        .containsEntry(module.key(), module.original());
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      double[] delta = diffusersFactors.get(module.key()).delta();
      double[] expected = new double[delta.length];
      for (int i = 0; i < expected.length; i++) {
        expected[i] = original.getDouble(i) + 0.7 * delta[i];
      }
      assertFused(file.tensor(module.original()), 0, expected, module.path());
    }
  }

  /** W + 0.7·ΔW(diffusers) + 0.5·ΔW(PEFT UNet) + 0.25·ΔW(PEFT text encoder), in float64. */
  private double[] expectedFused(Module module, TensorData original) {
    double weight = module.component().equals("unet") ? 0.5 : 0.25;
    double[] first = diffusersFactors.get(module.key()).delta();
    double[] second = peftFactors.containsKey(module.key()) ? peftFactors.get(module.key()).delta() : new double[first.length];
    double[] result = new double[first.length];
    for (int i = 0; i < result.length; i++) {
      result[i] = original.getDouble(i) + 0.7 * first[i] + weight * second[i];
    }
    return result;
  }

  private static void assertFused(TensorData fused, long offset, double[] expected, String what) {
    for (int i = 0; i < expected.length; i++) {
      double actual = fused.getDouble(offset + i);
      if (actual != (double) (float) expected[i]) {
        assertThat(actual).as("%s element %d", what, i).isEqualTo((double) (float) expected[i]);
      }
    }
  }

  private static TensorData gaussian(Random random, long... shape) {
    return TestTensors.gaussian(random, DType.F32, shape);
  }
}

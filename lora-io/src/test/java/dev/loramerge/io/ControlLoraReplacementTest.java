package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.AdapterKind;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.BlockWeights;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The attention norms' scales of BFL's Flux.1 control LoRAs (FLUX.1-Canny-dev-lora,
 * FLUX.1-Depth-dev-lora), built in code with their real names and shapes ([128], bf16, beside
 * {@code lora_A}/{@code lora_B} factors), read as {@link AdapterKind#REPLACEMENT}s: each replaces
 * the base's norm weight whole.
 *
 * <ul>
 *   <li>Names: BFL's {@code double_blocks.N.img_attn.norm.query_norm.scale}, {@code key_norm},
 *       {@code txt_attn.norm.…}, {@code single_blocks.N.norm.query_norm.scale}, {@code key_norm}
 *       are diffusers' {@code transformer_blocks.N.attn.norm_q.weight}, {@code norm_k}, {@code
 *       norm_added_q}, {@code norm_added_k} and {@code single_transformer_blocks.N.attn.norm_q/k}
 *       (diffusers {@code loaders/lora_conversion_utils.py} {@code
 *       _convert_bfl_flux_control_lora_to_diffusers}); ComfyUI reads them under {@code
 *       diffusion_model.} ({@code comfy/lora_convert.py} {@code convert_lora_bfl_control}); diffusers'
 *       own control LoRAs hold them as {@code transformer.<path>.weight} ({@code
 *       examples/flux-control/train_control_lora_flux.py}, loaded by {@code FluxLoraLoaderMixin}
 *       for the keys holding one of its {@code _control_lora_supported_norm_keys}).
 *   <li>Semantics: diffusers' {@code _load_norm_into_transformer} loads them with {@code
 *       load_state_dict} in place of the transformer's weights; ComfyUI makes them {@code "set"}
 *       patches, which {@code comfy/lora.py calculate_weight} applies with {@code
 *       weight.copy_(v[0])}, whatever the strength. So the fused weight is the replacement rounded
 *       to the base's dtype, at any weight but 0.
 * </ul>
 */
class ControlLoraReplacementTest {
  private static final long INNER = 3072;
  private static final long HEAD = 128;

  /** BFL's name of each norm scale of double block 0 and single block 0, with its diffusers module. */
  private static final Map<String, String> NORMS = new LinkedHashMap<>();

  static {
    NORMS.put("double_blocks.0.img_attn.norm.query_norm", "transformer_blocks.0.attn.norm_q");
    NORMS.put("double_blocks.0.img_attn.norm.key_norm", "transformer_blocks.0.attn.norm_k");
    NORMS.put("double_blocks.0.txt_attn.norm.query_norm", "transformer_blocks.0.attn.norm_added_q");
    NORMS.put("double_blocks.0.txt_attn.norm.key_norm", "transformer_blocks.0.attn.norm_added_k");
    NORMS.put("single_blocks.0.norm.query_norm", "single_transformer_blocks.0.attn.norm_q");
    NORMS.put("single_blocks.0.norm.key_norm", "single_transformer_blocks.0.attn.norm_k");
  }

  @TempDir Path folder;

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  /** A learned norm scale: around 1, as RMSNorm's scale starts at 1, in bf16 as BFL ships them. */
  private static TensorData scale(Random random) {
    double[] values = new double[Math.toIntExact(HEAD)];
    for (int i = 0; i < values.length; i++) {
      values[i] = 1 + 0.3 * random.nextGaussian();
    }
    return TensorData.ofDoubles(values, DType.BF16, HEAD);
  }

  /** How each layout names the norm scale of BFL name {@code bfl} (diffusers module {@code diffusers}). */
  private static String normName(String layout, String bfl, String diffusers) {
    return switch (layout) {
      case "bfl" -> bfl + ".scale";
      case "comfyui" -> "diffusion_model." + bfl + ".scale";
      default -> "transformer." + diffusers + ".weight";
    };
  }

  /**
   * A control LoRA in {@code layout}: a LoRA with its {@code lora_B.bias} on {@code time_in.in_layer}
   * (diffusers' {@code time_text_embed.timestep_embedder.linear_1}, [3072, 256]) and the six norm
   * scales of double block 0 and single block 0; {@code scales} receives them by diffusers module.
   */
  private Path control(String layout, long seed, Map<String, TensorData> scales) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String lora = switch (layout) {
      case "bfl" -> "time_in.in_layer";
      case "comfyui" -> "diffusion_model.time_in.in_layer";
      default -> "transformer.time_text_embed.timestep_embedder.linear_1";
    };
    tensors.put(lora + ".lora_A.weight", TestTensors.gaussian(random, DType.BF16, 4, 256));
    tensors.put(lora + ".lora_B.weight", TestTensors.gaussian(random, DType.BF16, INNER, 4));
    tensors.put(lora + ".lora_B.bias", TestTensors.gaussian(random, DType.BF16, INNER));
    NORMS.forEach((bfl, diffusers) -> {
      TensorData scale = scale(random);
      tensors.put(normName(layout, bfl, diffusers), scale);
      scales.put(diffusers, scale);
    });
    Path path = folder.resolve(layout + "-" + seed + ".safetensors");
    Safetensors.write(path, tensors, Map.of());
    return path;
  }

  @ParameterizedTest
  @EnumSource(value = LoraFormat.class, names = {"BFL", "COMFYUI", "DIFFUSERS"})
  void normScalesAreReadAsReplacementsOfTheirDiffusersModules(LoraFormat layout) throws IOException {
    Map<String, TensorData> scales = new LinkedHashMap<>();
    Path path = control(layout.cliName(), 1, scales);
    assertThat(LoraFiles.detect(path)).isEqualTo(layout);
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, LoraReadOptions.builder().build());
    LoraAdapter adapter = file.adapter();
    assertThat(Architecture.detect(adapter)).as("the norms are Flux.1's").contains(Architecture.flux());
    assertThat(adapter.size()).isEqualTo(1 + NORMS.size());
    NORMS.forEach((bfl, diffusers) -> {
      LoraModule module = adapter.module(key(diffusers)).orElseThrow();
      assertThat(module.adapterKind()).as(diffusers).isEqualTo(AdapterKind.REPLACEMENT);
      assertThat(module.kindName()).isEqualTo("replacement");
      assertThat(module.weightShape()).containsExactly(HEAD);
      assertThat(module.replacementWeight()).as("%s, bit for bit", diffusers).isEqualTo(scales.get(diffusers));
      String named = normName(layout.cliName(), bfl, diffusers);
      assertThat(file.moduleNames().get(key(diffusers)))
          .isEqualTo(layout == LoraFormat.DIFFUSERS ? named : named.substring(0, named.length() - ".scale".length()));
    });
    assertThat(adapter.module(key("time_text_embed.timestep_embedder.linear_1")).orElseThrow().kindName()).isEqualTo("LoRA+bias");
  }

  @Test
  void aNormScaleOfAnotherShapeIsRefusedByName() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    Random random = new Random(3);
    tensors.put("double_blocks.0.img_attn.proj.lora_A.weight", TestTensors.gaussian(random, DType.BF16, 4, INNER));
    tensors.put("double_blocks.0.img_attn.proj.lora_B.weight", TestTensors.gaussian(random, DType.BF16, INNER, 4));
    tensors.put("double_blocks.0.img_attn.norm.key_norm.scale", TestTensors.gaussian(random, DType.BF16, 64));
    Path path = folder.resolve("narrow.safetensors");
    Safetensors.write(path, tensors, Map.of());
    assertThatThrownBy(() -> LoraFiles.read(path))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("narrow.safetensors: tensor 'double_blocks.0.img_attn.norm.key_norm.scale' replaces norm scale"
            + " 'transformer.transformer_blocks.0.attn.norm_k', which is [128], but is BF16 [64]");
  }

  @Test
  void convertsToDiffusersNormWeightsAndBackAndIsRefusedByKohyaAndPeft() throws IOException {
    Map<String, TensorData> scales = new LinkedHashMap<>();
    LoraAdapter adapter = LoraFiles.read(control("bfl", 2, scales));
    Path diffusers = folder.resolve("diffusers.safetensors");
    LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS);
    try (SafetensorsFile file = SafetensorsFile.open(diffusers)) {
      scales.forEach((module, scale) ->
          assertThat(file.tensor("transformer." + module + ".weight")).as(module).isEqualTo(scale));
      assertThat(file.metadata().get(DiffusersFormat.METADATA_KEY))
          .as("the LoRA config lists the LoRA alone").doesNotContain("norm_q");
    }
    LoraAdapter back = LoraFiles.read(diffusers);
    assertThat(back.modules()).isEqualTo(adapter.modules());

    LoraAdapter one = LoraAdapter.builder().name("norm")
        .add(LoraModule.replacement(key("transformer_blocks.0.attn.norm_added_k"), scales.get("transformer_blocks.0.attn.norm_added_k")))
        .build();
    for (LoraFormat format : new LoraFormat[] {LoraFormat.KOHYA, LoraFormat.PEFT}) {
      Path target = folder.resolve("refused-" + format.cliName());
      assertThatThrownBy(() -> LoraFiles.write(one, target, format))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("module 'transformer.transformer_blocks.0.attn.norm_added_k' is a replacement (its tensor takes the base"
              + " weight's place), which the " + (format == LoraFormat.KOHYA ? "kohya" : "PEFT") + " layout cannot hold;"
              + " write it in the diffusers layout, or fuse it");
      assertThat(target).doesNotExist();
    }
  }

  /** Base naming × dtype: BFL's bare checkpoint, ComfyUI's single file, diffusers' transformer. */
  static Stream<Arguments> bases() {
    return Stream.of("bfl", "comfyui", "diffusers").flatMap(naming -> Stream.of(
        DType.F32, DType.F16, DType.BF16, DType.F8_E4M3, DType.F8_E5M2).map(dtype -> Arguments.of(naming, dtype)));
  }

  /** The base's name of a weight: diffusers module {@code diffusers}, BFL {@code bfl} with its own suffix. */
  private static String baseName(String naming, String bfl, String diffusers) {
    return switch (naming) {
      case "bfl" -> bfl;
      case "comfyui" -> "model.diffusion_model." + bfl;
      default -> diffusers;
    };
  }

  /** A base with the LoRA's weight and bias, the six norm scales (zeros) and one tensor nothing touches. */
  private Path base(String naming, DType dtype) throws IOException {
    Random random = new Random(17);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put(baseName(naming, "time_in.in_layer.weight", "time_text_embed.timestep_embedder.linear_1.weight"),
        TestTensors.typed(TestTensors.gaussian(random, DType.F64, INNER, 256), dtype));
    tensors.put(baseName(naming, "time_in.in_layer.bias", "time_text_embed.timestep_embedder.linear_1.bias"),
        TestTensors.typed(TestTensors.gaussian(random, DType.F64, INNER), dtype));
    NORMS.forEach((bfl, diffusers) -> tensors.put(baseName(naming, bfl + ".scale", diffusers + ".weight"),
        TestTensors.typed(TensorData.ofDoubles(new double[Math.toIntExact(HEAD)], DType.F64, HEAD), dtype)));
    tensors.put(baseName(naming, "img_in.weight", "x_embedder.weight"), TestTensors.typed(TestTensors.gaussian(random, DType.F64, INNER, 64), dtype));
    Path base = folder.resolve("base-" + naming + "-" + dtype.safetensorsName() + ".safetensors");
    Safetensors.write(base, tensors, Map.of());
    return base;
  }

  /**
   * Every replaced norm is the replacement's exact value rounded once to the base's dtype (the
   * independent round-to-nearest-even search of {@link AdapterKindsFuseTest.Nearest}), whatever
   * the weight (0.6 here), and a restore gives back the base's bytes.
   */
  @ParameterizedTest
  @MethodSource("bases")
  void fusedNormIsTheReplacementRoundedOnceAndARestoreGivesBackTheBytes(String naming, DType dtype) throws IOException {
    Map<String, TensorData> scales = new LinkedHashMap<>();
    LoraAdapter adapter = LoraFiles.read(control("bfl", 4, scales));
    Path base = base(naming, dtype);
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.6).build());
    assertThat(fuser.fuseInto(SafetensorsWeights.of(base, fused)).report().matched()).hasSize(1 + NORMS.size());
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      for (Map.Entry<String, String> norm : NORMS.entrySet()) {
        String name = baseName(naming, norm.getKey() + ".scale", norm.getValue() + ".weight");
        double[] exact = scales.get(norm.getValue()).toDoubleArray();
        ByteBuffer actual = after.tensor(name).bytes().order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < exact.length; i++) {
          long bits = switch (dtype.byteSize()) {
            case 4 -> actual.getInt(i * 4);
            case 2 -> actual.getShort(i * 2) & 0xffff;
            default -> actual.get(i) & 0xff;
          };
          assertThat(bits).as("%s %s[%d], replacement %s", dtype, name, i, exact[i])
              .isEqualTo(AdapterKindsFuseTest.Nearest.code(exact[i], dtype));
        }
      }
      String untouched = baseName(naming, "img_in.weight", "x_embedder.weight");
      assertThat(after.tensor(untouched)).isEqualTo(before.tensor(untouched));
    }
    Path restored = folder.resolve("restored.safetensors");
    fuser.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    assertThat(Files.readAllBytes(restored)).as("restored %s %s base", naming, dtype).isEqualTo(Files.readAllBytes(base));
  }

  @Test
  void weightZeroLeavesTheBaseAndAReplacementIsNeverSubtracted() throws IOException {
    LoraAdapter adapter = LoraFiles.read(control("bfl", 5, new LinkedHashMap<>()));
    Path base = base("bfl", DType.BF16);
    LoraMerger none = LoraMerger.builder().add(adapter, 1).build();
    Path fused = folder.resolve("scale0.safetensors");
    LoraFuser.builder().merger(none).scale(0).build().fuseInto(SafetensorsWeights.of(base, fused));
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      for (String norm : NORMS.keySet()) {
        assertThat(after.tensor(norm + ".scale")).as(norm).isEqualTo(before.tensor(norm + ".scale"));
      }
    }
    Path subtracted = folder.resolve("subtracted.safetensors");
    assertThatThrownBy(() -> LoraFuser.of(none).unfuseFrom(SafetensorsWeights.of(base, subtracted)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'transformer.single_transformer_blocks.0.attn.norm_k' is a replacement, which cannot be subtracted"
            + " (its tensor took the base weight's place); restore the original weights instead");
    assertThat(subtracted).doesNotExist();
  }

  @Test
  void aMergeCarriesIdenticalReplacementsOnceAndRefusesDifferentOnes() throws IOException {
    Map<String, TensorData> scales = new LinkedHashMap<>();
    // The LoRA's bias difference cannot be merged into a LoRA; the norms alone are merged here.
    ModuleKey lora = key("time_text_embed.timestep_embedder.linear_1");
    LoraAdapter canny = LoraFiles.read(control("bfl", 6, scales)).toBuilder().name("canny").remove(lora).build();
    LoraAdapter again = LoraFiles.read(control("diffusers", 6, new LinkedHashMap<>())).toBuilder().name("again").remove(lora).build();
    LoraAdapter merged = LoraMerger.builder().add(canny, 0.5).add(again, 0.25).merge();
    NORMS.values().forEach(module -> {
      LoraModule carried = merged.module(key(module)).orElseThrow();
      assertThat(carried.adapterKind()).isEqualTo(AdapterKind.REPLACEMENT);
      assertThat(carried.replacementWeight()).as("%s, unscaled by 0.5 + 0.25", module).isEqualTo(scales.get(module));
    });
    assertThat(merged.size()).isEqualTo(NORMS.size());
    BlockWeights zeros = BlockWeights.of(Architecture.flux(), Collections.nCopies(Architecture.flux().blockIds().size(), 0.0));
    assertThat(LoraMerger.builder().add(canny, 0.5, zeros).merge().modules())
        .as("block weights do not act on a replacement").isEqualTo(canny.modules());

    LoraAdapter depth = LoraFiles.read(control("bfl", 7, new LinkedHashMap<>())).toBuilder().name("depth").remove(lora).build();
    assertThatThrownBy(() -> LoraMerger.builder().add(canny, 0.5).add(depth, 0.5).merge())
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'transformer.single_transformer_blocks.0.attn.norm_k' is replaced by different tensors in adapters"
            + " 'canny' and 'depth'; a replacement is all or nothing and is never averaged: take one of the adapters, or give"
            + " the other weight 0");
    assertThat(LoraMerger.builder().add(canny, 0.5).add(depth, 0).merge().module(key("transformer_blocks.0.attn.norm_q")))
        .as("weight 0 takes no part").map(LoraModule::replacementWeight).contains(scales.get("transformer_blocks.0.attn.norm_q"));
  }
}

package dev.loramerge.arch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.internal.arch.ParameterTally;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Flux.1's descriptor (generated from FLUX.1-dev's {@code transformer/config.json}) and the fused
 * weights of BFL's checkpoint. Names follow diffusers' {@code scripts/convert_flux_to_diffusers.py}
 * and kohya sd-scripts' {@code networks/lora_flux.py}; shapes follow {@code flux1-dev.safetensors}.
 */
class FusedModuleTest {
  private static final Architecture FLUX = Architecture.flux();

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  @Nested
  class Descriptor {
    @Test
    void listedWeightsAddUpToFluxDevsParameterCount() {
      // FLUX.1-dev's transformer has 11,901,408,320 parameters: every Linear has a bias, and the
      // attention's RMS norms hold one 128-wide scale each (4 per double block, 2 per single).
      long total = 0;
      for (ModuleSpec spec : FLUX.modules().values()) {
        if (spec.key().component() == Component.TRANSFORMER) {
          total += spec.outFeatures() * spec.inFeatures() + spec.outFeatures();
        }
      }
      total += 19 * 4 * 128 + 38 * 2 * 128;
      assertThat(total).as("Flux.1 transformer parameters").isEqualTo(11_901_408_320L);
      assertThat(ParameterTally.total(FLUX, Component.TEXT_ENCODER)).as("CLIP-L").isEqualTo(123_060_480L);
    }

    @ParameterizedTest
    @CsvSource({
      "x_embedder,                                  3072 64,    img_in,",
      "context_embedder,                            3072 4096,  txt_in,",
      "time_text_embed.timestep_embedder.linear_1,  3072 256,   time_in.in_layer,",
      "time_text_embed.guidance_embedder.linear_2,  3072 3072,  guidance_in.out_layer,",
      "time_text_embed.text_embedder.linear_1,      3072 768,   vector_in.in_layer,",
      "transformer_blocks.0.norm1.linear,           18432 3072, double_blocks.0.img_mod.lin,     double_blocks.0",
      "transformer_blocks.18.norm1_context.linear,  18432 3072, double_blocks.18.txt_mod.lin,    double_blocks.18",
      "transformer_blocks.3.attn.to_out.0,          3072 3072,  double_blocks.3.img_attn.proj,   double_blocks.3",
      "transformer_blocks.3.attn.to_add_out,        3072 3072,  double_blocks.3.txt_attn.proj,   double_blocks.3",
      "transformer_blocks.7.ff.net.0.proj,          12288 3072, double_blocks.7.img_mlp.0,       double_blocks.7",
      "transformer_blocks.7.ff_context.net.2,       3072 12288, double_blocks.7.txt_mlp.2,       double_blocks.7",
      "single_transformer_blocks.37.norm.linear,    9216 3072,  single_blocks.37.modulation.lin, single_blocks.37",
      "single_transformer_blocks.0.proj_out,        3072 15360, single_blocks.0.linear2,         single_blocks.0",
      "proj_out,                                    64 3072,    final_layer.linear,",
    })
    void modulesHaveTheirShapeOriginalNameAndBlock(String path, String shape, String original, String block) {
      ModuleSpec spec = FLUX.module(key(path)).orElseThrow();
      assertThat(spec.weightShape()).as(path).containsExactly(Arrays.stream(shape.split(" ")).mapToLong(Long::parseLong).toArray());
      assertThat(spec.originalPath()).as(path).contains(original);
      assertThat(spec.blockId()).as(path).isEqualTo(Optional.ofNullable(block));
      assertThat(FLUX.kohyaName(spec.key())).isEqualTo("lora_unet_" + original.replace('.', '_'));
      assertThat(FLUX.resolveKohyaName("lora_unet_" + original.replace('.', '_'))).contains(spec.key());
    }

    @Test
    void blockIdsAreBaseThenDoubleThenSingleBlocks() {
      assertThat(FLUX.blockIds()).hasSize(1 + 19 + 38);
      assertThat(FLUX.blockIds().subList(0, 3)).containsExactly("BASE", "double_blocks.0", "double_blocks.1");
      assertThat(FLUX.blockIds().subList(19, 22)).containsExactly("double_blocks.18", "single_blocks.0", "single_blocks.1");
      assertThat(FLUX.blockIds().get(57)).isEqualTo("single_blocks.37");
      assertThat(FLUX.loraBlockIds()).isEqualTo(FLUX.blockIds());
    }

    @Test
    void kohyasDefaultTargetsAre304Modules() {
      // sd-scripts' lora_flux.py targets every Linear of DoubleStreamBlock (10) and
      // SingleStreamBlock (3) and logs "create LoRA for FLUX all blocks: 304 modules".
      long plain = FLUX.modules().values().stream()
          .filter(spec -> spec.blockId().filter(id -> !id.equals("BASE")).isPresent())
          .filter(spec -> FLUX.fusedModule(spec.key()).isEmpty())
          .count();
      long fused = FLUX.fusedModules().values().stream().filter(module -> module.blockId().isPresent()).count();
      assertThat(plain + fused).isEqualTo(304);
    }

    @Test
    void fusedWeightsStackTheirPartsAsBflsCheckpointDoes() {
      assertThat(FLUX.fusedModules()).hasSize(19 * 2 + 38 + 1);
      FusedModule qkv = FLUX.fusedModules().get("double_blocks.4.img_attn.qkv");
      assertThat(qkv.weightShape()).containsExactly(9216, 3072);
      assertThat(qkv.keys()).containsExactly(
          key("transformer_blocks.4.attn.to_q"), key("transformer_blocks.4.attn.to_k"), key("transformer_blocks.4.attn.to_v"));
      FusedModule txt = FLUX.fusedModules().get("double_blocks.4.txt_attn.qkv");
      assertThat(txt.keys()).containsExactly(
          key("transformer_blocks.4.attn.add_q_proj"), key("transformer_blocks.4.attn.add_k_proj"),
          key("transformer_blocks.4.attn.add_v_proj"));
      FusedModule linear1 = FLUX.fusedModules().get("single_blocks.9.linear1");
      assertThat(linear1.weightShape()).containsExactly(21504, 3072);
      assertThat(linear1.keys()).containsExactly(
          key("single_transformer_blocks.9.attn.to_q"), key("single_transformer_blocks.9.attn.to_k"),
          key("single_transformer_blocks.9.attn.to_v"), key("single_transformer_blocks.9.proj_mlp"));
      assertThat(linear1.blockId()).contains("single_blocks.9");
      assertThat(FLUX.fusedModule(key("single_transformer_blocks.9.proj_mlp"))).containsSame(linear1);
      assertThat(FLUX.resolveFusedKohyaName("lora_unet_single_blocks_9_linear1")).containsSame(linear1);
      assertThat(FLUX.kohyaName(linear1)).isEqualTo("lora_unet_single_blocks_9_linear1");
      assertThat(FLUX.module(key("single_transformer_blocks.9.proj_mlp")).orElseThrow().originalPath()).isEmpty();
      FusedModule finalLayer = FLUX.fusedModules().get("final_layer.adaLN_modulation.1");
      assertThat(finalLayer.segments()).containsExactly(
          new FusedModule.Segment(key("norm_out.linear"), 3072, 3072), new FusedModule.Segment(key("norm_out.linear"), 0, 3072));
      assertThat(Architecture.sdxl().fusedModules()).isEmpty();
    }

    @Test
    void detectsAFluxAdapterByItsTransformerModules() {
      LoraModule q = LoraModule.of(key("transformer_blocks.0.attn.to_q"), gaussian(new Random(1), 2, 3072), gaussian(new Random(2), 3072, 2), 2);
      assertThat(Architecture.detect(dev.loramerge.LoraAdapter.builder().add(q).build())).containsSame(FLUX);
    }
  }

  /** A small fused weight of three parts (4 + 3 + 5 rows over 6 inputs), like img_attn.qkv. */
  private static final FusedModule SMALL =
      new FusedModule(
          "double_blocks.0.img_attn.qkv",
          6,
          Optional.of("double_blocks.0"),
          com.google.common.collect.ImmutableList.of(
              new FusedModule.Segment(key("a"), 0, 4), new FusedModule.Segment(key("b"), 0, 3), new FusedModule.Segment(key("c"), 0, 5)));

  /** Like the final layer: module {@code n}'s two halves swapped. */
  private static final FusedModule SWAPPED =
      new FusedModule(
          "final_layer.adaLN_modulation.1",
          6,
          Optional.empty(),
          com.google.common.collect.ImmutableList.of(new FusedModule.Segment(key("n"), 3, 3), new FusedModule.Segment(key("n"), 0, 3)));

  @Nested
  class SplitAndJoin {
    @Test
    void splitPartsShareDownAndHoldTheFusedUpdatesRowsExactly() {
      TensorData down = gaussian(new Random(3), DType.BF16, 2, 6);
      TensorData up = gaussian(new Random(4), DType.BF16, 12, 2);
      List<LoraModule> parts = SMALL.split(down, up, 1.5, ScaleRule.STANDARD);
      double[] fused = LoraModule.of(key("fused"), down, up, 1.5).deltaF64();
      int row = 0;
      for (LoraModule part : parts) {
        assertThat(part.down()).isSameAs(down);
        assertThat(part.alpha()).isEqualTo(1.5);
        double[] delta = part.deltaF64();
        assertThat(delta).as("%s update", part.key()).containsExactly(Arrays.copyOfRange(fused, row * 6, row * 6 + delta.length));
        row += delta.length / 6;
      }
      assertThat(parts).extracting(LoraModule::outFeatures).containsExactly(4L, 3L, 5L);
    }

    @Test
    void joiningWhatASplitGaveGivesBackTheSameBytes() {
      TensorData down = gaussian(new Random(5), DType.F16, 3, 6);
      TensorData up = gaussian(new Random(6), DType.F16, 12, 3);
      FusedModule.Joined joined = SMALL.join(SMALL.split(down, up, 4, ScaleRule.RSLORA));
      assertThat(joined.down()).isSameAs(down);
      assertThat(joined.up()).isEqualTo(up);
      assertThat(joined.alpha()).isEqualTo(4);
      assertThat(joined.scaleRule()).isEqualTo(ScaleRule.RSLORA);
    }

    @Test
    void swappedHalvesSplitIntoOneModuleInDiffusersOrderAndJoinBack() {
      TensorData down = gaussian(new Random(7), DType.F32, 2, 6);
      TensorData up = gaussian(new Random(8), DType.F32, 6, 2);
      List<LoraModule> parts = SWAPPED.split(down, up, 2, ScaleRule.STANDARD);
      assertThat(parts).hasSize(1);
      double[] fused = LoraModule.of(key("fused"), down, up, 2).deltaF64();
      double[] part = parts.get(0).deltaF64();
      assertThat(Arrays.copyOfRange(part, 0, 18)).containsExactly(Arrays.copyOfRange(fused, 18, 36));
      assertThat(Arrays.copyOfRange(part, 18, 36)).containsExactly(Arrays.copyOfRange(fused, 0, 18));
      assertThat(SWAPPED.join(parts).up()).isEqualTo(up);
    }

    @Test
    void perRowValuesSplitAndJoinByTheSameRowsAsUpWithZerosForAMissingPart() {
      TensorData bias = gaussian(new Random(11), DType.BF16, 12);
      var rows = SMALL.splitRows(bias);
      assertThat(rows.keySet()).containsExactly(key("a"), key("b"), key("c"));
      assertThat(rows.get(key("b")).toDoubleArray()).containsExactly(Arrays.copyOfRange(bias.toDoubleArray(), 4, 7));
      assertThat(SMALL.joinRows(rows)).isEqualTo(bias);
      double[] withoutB = SMALL.joinRows(Map.of(key("a"), rows.get(key("a")), key("c"), rows.get(key("c")))).toDoubleArray();
      assertThat(Arrays.copyOfRange(withoutB, 4, 7)).containsOnly(0.0);
      assertThat(Arrays.copyOfRange(withoutB, 7, 12)).containsExactly(rows.get(key("c")).toDoubleArray());
      // The final layer's halves swap back: diffusers' (scale, shift) from BFL's (shift, scale).
      TensorData modulation = gaussian(new Random(12), DType.F32, 6);
      TensorData n = SWAPPED.splitRows(modulation).get(key("n"));
      assertThat(n.toDoubleArray()).containsExactly(
          modulation.getDouble(3), modulation.getDouble(4), modulation.getDouble(5),
          modulation.getDouble(0), modulation.getDouble(1), modulation.getDouble(2));
      assertThat(SWAPPED.joinRows(Map.of(key("n"), n))).isEqualTo(modulation);
      assertThatThrownBy(() -> SMALL.splitRows(gaussian(new Random(13), DType.F32, 11)))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("fused module 'double_blocks.0.img_attn.qkv': [11] holds 11 values, expected one per row (12)");
    }

    @Test
    void partsWithTheirOwnDownsJoinBlockDiagonallyWithTheRanksAddedUpExactly() {
      Random random = new Random(9);
      LoraModule a = LoraModule.of(key("a"), gaussian(random, DType.BF16, 2, 6), gaussian(random, DType.BF16, 4, 2), 4);
      LoraModule c = LoraModule.of(key("c"), gaussian(random, DType.BF16, 3, 6), gaussian(random, DType.BF16, 5, 3), 6);
      // Both scales are 2: a is α 4 at rank 2, c α 6 at rank 3; b is missing.
      FusedModule.Joined joined = SMALL.join(List.of(c, a));
      assertThat(joined.rank()).isEqualTo(5);
      assertThat(joined.down().dtype()).isEqualTo(DType.BF16);
      double[] delta = LoraModule.of(key("fused"), joined.down(), joined.up(), joined.alpha(), joined.scaleRule()).deltaF64();
      assertThat(Arrays.copyOfRange(delta, 0, 24)).containsExactly(a.deltaF64());
      assertThat(Arrays.copyOfRange(delta, 24, 42)).containsOnly(0.0);
      assertThat(Arrays.copyOfRange(delta, 42, 72)).containsExactly(c.deltaF64());
    }

    @Test
    void partsWithDifferentScalesKeepTheFirstScaleAndFoldTheRatioIntoUp() {
      Random random = new Random(10);
      LoraModule a = LoraModule.of(key("a"), gaussian(random, DType.F32, 2, 6), gaussian(random, DType.F32, 4, 2), 2);
      LoraModule b = LoraModule.of(key("b"), gaussian(random, DType.F32, 2, 6), gaussian(random, DType.F32, 3, 2), 8);
      FusedModule.Joined joined = SMALL.join(List.of(a, b));
      double[] delta = LoraModule.of(key("fused"), joined.down(), joined.up(), joined.alpha(), joined.scaleRule()).deltaF64();
      // b's scale is 4 × a's: its up values are multiplied by 4, exactly in float32.
      assertThat(Arrays.copyOfRange(delta, 0, 24)).containsExactly(a.deltaF64());
      assertThat(Arrays.copyOfRange(delta, 24, 42)).containsExactly(b.deltaF64());
    }

    @Test
    void refusesFactorsThatDoNotFit() {
      assertThatThrownBy(() -> SMALL.split(gaussian(new Random(1), DType.F32, 2, 6), gaussian(new Random(2), DType.F32, 11, 2), 1, ScaleRule.STANDARD))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("fused module 'double_blocks.0.img_attn.qkv': down [2, 6] and up [11, 2] do not make a LoRA of its [12, 6] weight");
      LoraModule wrong = LoraModule.of(key("b"), gaussian(new Random(1), DType.F32, 2, 6), gaussian(new Random(2), DType.F32, 4, 2), 2);
      assertThatThrownBy(() -> SMALL.join(List.of(wrong)))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("module 'transformer.b' updates a [4, 6] weight, but as a part of 'double_blocks.0.img_attn.qkv' it is [3, 6]");
      LoraModule foreign = LoraModule.of(key("z"), gaussian(new Random(1), DType.F32, 2, 6), gaussian(new Random(2), DType.F32, 4, 2), 2);
      assertThatThrownBy(() -> SMALL.join(List.of(foreign)))
          .hasMessage("module 'transformer.z' is not a part of fused weight 'double_blocks.0.img_attn.qkv'");
    }
  }

  static TensorData gaussian(Random random, long... shape) {
    return gaussian(random, DType.F32, shape);
  }

  static TensorData gaussian(Random random, DType dtype, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian();
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }
}

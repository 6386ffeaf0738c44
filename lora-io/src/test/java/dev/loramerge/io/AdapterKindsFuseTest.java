package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.AdapterKind;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.function.IntToDoubleFunction;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * LyCORIS kinds (Tucker LoCon, LoHa and its Tucker form, LoKr, full and bias differences, DoRA)
 * read from a kohya/LyCORIS file built in code with SD1.5's kohya names and shapes, and fused
 * file to file into F32, F16, BF16 and float8 bases: every fused element equals the float64 value
 * of the update, computed here from the formulas of LyCORIS ({@code lycoris/functional/loha.py},
 * {@code lokr.py}, {@code general.py rebuild_tucker}, {@code modules/locon.py
 * apply_weight_decompose}) and ComfyUI ({@code comfy/weight_adapter/loha.py}, {@code lokr.py}:
 * LoKr's alpha applies only with a factored part), rounded once to nearest even by a search over
 * the format's codes written here; a restore gives back the base's bytes.
 */
class AdapterKindsFuseTest {
  private static final String UNET = "lora_unet_down_blocks_0_";
  private static final String TUCKER_LOCON = UNET + "resnets_0_conv1";
  private static final String TUCKER_LOHA = UNET + "resnets_0_conv2";
  private static final String FLAT_LOHA = UNET + "resnets_1_conv1";
  private static final String LOHA = UNET + "attentions_0_transformer_blocks_0_attn1_to_q";
  private static final String LOKR = UNET + "attentions_0_transformer_blocks_0_attn1_to_k";
  private static final String LOKR_FULL_W2 = UNET + "attentions_0_transformer_blocks_0_ff_net_0_proj";
  private static final String LOKR_CONV = UNET + "resnets_1_conv2";
  private static final String FULL = UNET + "attentions_0_transformer_blocks_0_attn1_to_out_0";
  private static final String DORA_OUT = UNET + "attentions_0_transformer_blocks_0_attn1_to_v";
  private static final String DORA_IN = UNET + "attentions_0_transformer_blocks_0_ff_net_2";
  private static final String LORA = UNET + "attentions_0_transformer_blocks_0_attn2_to_q";
  private static final double WEIGHT = 0.8;

  @TempDir Path folder;

  private final Random random = new Random(25);
  private final Map<String, TensorData> tensors = new LinkedHashMap<>();
  /** The expected update at weight 1 of each additive module, by its diffusers weight name. */
  private final Map<String, double[]> deltas = new LinkedHashMap<>();
  /** The DoRA modules: weight name → {the update at weight 1, the magnitudes, per output (1) or not (0)}. */
  private final Map<String, double[][]> doras = new LinkedHashMap<>();
  private final Map<String, long[]> shapes = new LinkedHashMap<>();

  private Path lycorisFile() throws IOException {
    // Tucker LoCon (LyCORIS locon.py with use_tucker): lora_down [r, in, 1, 1], lora_mid [r, r, 3, 3],
    // lora_up [out, r, 1, 1]; ΔW[o, i, s] = α/r · Σ_p Σ_q up[o, p]·mid[p, q, s]·down[q, i].
    {
      double[] down = put(TUCKER_LOCON + ".lora_down.weight", DType.F16, 0.1, 4, 320, 1, 1);
      double[] mid = put(TUCKER_LOCON + ".lora_mid.weight", DType.F16, 0.3, 4, 4, 3, 3);
      double[] up = put(TUCKER_LOCON + ".lora_up.weight", DType.F16, 0.05, 320, 4, 1, 1);
      alpha(TUCKER_LOCON, 2);
      double[] delta = new double[320 * 320 * 9];
      for (int o = 0; o < 320; o++) {
        for (int i = 0; i < 320; i++) {
          for (int s = 0; s < 9; s++) {
            double sum = 0;
            for (int p = 0; p < 4; p++) {
              for (int q = 0; q < 4; q++) {
                sum += up[o * 4 + p] * mid[(p * 4 + q) * 9 + s] * down[q * 320 + i];
              }
            }
            delta[(o * 320 + i) * 9 + s] = 0.5 * sum;
          }
        }
      }
      expect("down_blocks.0.resnets.0.conv1.weight", delta, 320, 320, 3, 3);
    }
    // Tucker LoHa (LyCORIS loha.py with use_tucker): hada_t [r, r, 3, 3], hada_w_a [r, out],
    // hada_w_b [r, in]; each half rebuild[p, c, s] = Σ_i Σ_j t[i, j, s]·w_b[j, c]·w_a[i, p]
    // (einsum "i j k l, j r, i p -> p r k l"), ΔW = α/r · half₁ ⊙ half₂.
    {
      double[][] halves = new double[2][];
      for (int h = 1; h <= 2; h++) {
        double[] t = put(TUCKER_LOHA + ".hada_t" + h, DType.F32, 0.5, 3, 3, 3, 3);
        double[] a = put(TUCKER_LOHA + ".hada_w" + h + "_a", DType.F32, 0.2, 3, 320);
        double[] b = put(TUCKER_LOHA + ".hada_w" + h + "_b", DType.F32, 0.2, 3, 320);
        double[] half = new double[320 * 320 * 9];
        for (int p = 0; p < 320; p++) {
          for (int c = 0; c < 320; c++) {
            for (int s = 0; s < 9; s++) {
              double sum = 0;
              for (int i = 0; i < 3; i++) {
                for (int j = 0; j < 3; j++) {
                  sum += t[(i * 3 + j) * 9 + s] * b[j * 320 + c] * a[i * 320 + p];
                }
              }
              half[(p * 320 + c) * 9 + s] = sum;
            }
          }
        }
        halves[h - 1] = half;
      }
      alpha(TUCKER_LOHA, 1.5);
      double[] delta = new double[halves[0].length];
      for (int i = 0; i < delta.length; i++) {
        delta[i] = 0.5 * halves[0][i] * halves[1][i];
      }
      expect("down_blocks.0.resnets.0.conv2.weight", delta, 320, 320, 3, 3);
    }
    // LoHa on a 3×3 convolution without Tucker: LyCORIS flattens it to [out, in·9].
    expect("down_blocks.0.resnets.1.conv1.weight", loha(FLAT_LOHA, 320, 2880, 4, 2.0), 320, 320, 3, 3);
    expect("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", loha(LOHA, 320, 320, 3, 6.0), 320, 320);
    // LoKr, full w1 [4, 4] and factored w2 [80, 2]·[2, 80]: α/dim with dim = w2's rank.
    {
      double[] w1 = put(LOKR + ".lokr_w1", DType.F32, 0.5, 4, 4);
      double[] w2 = product(put(LOKR + ".lokr_w2_a", DType.F32, 0.1, 80, 2), put(LOKR + ".lokr_w2_b", DType.F32, 0.1, 2, 80), 80, 2, 80);
      alpha(LOKR, 1);
      expect("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight", kron(w1, 4, 4, w2, 80, 80, 0.5), 320, 320);
    }
    // LoKr, factored w1 [8, 2]·[2, 4] and full w2 [320, 80]: dim is w1's rank.
    {
      double[] w1 = product(put(LOKR_FULL_W2 + ".lokr_w1_a", DType.F32, 0.3, 8, 2), put(LOKR_FULL_W2 + ".lokr_w1_b", DType.F32, 0.3, 2, 4), 8, 2, 4);
      double[] w2 = put(LOKR_FULL_W2 + ".lokr_w2", DType.BF16, 0.05, 320, 80);
      alpha(LOKR_FULL_W2, 3);
      expect("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", kron(w1, 8, 4, w2, 320, 80, 1.5), 2560, 320);
    }
    // LoKr with w1 and a 4-d w2 both full: alpha is ignored (scale 1), w1 is unsqueezed to [a, b, 1, 1].
    {
      double[] w1 = put(LOKR_CONV + ".lokr_w1", DType.F32, 0.5, 4, 4);
      double[] w2 = put(LOKR_CONV + ".lokr_w2", DType.F32, 0.02, 80, 80, 3, 3);
      alpha(LOKR_CONV, 7);
      double[] delta = new double[320 * 320 * 9];
      for (int a = 0; a < 4; a++) {
        for (int c = 0; c < 80; c++) {
          for (int b = 0; b < 4; b++) {
            for (int d = 0; d < 80; d++) {
              for (int s = 0; s < 9; s++) {
                delta[((a * 80 + c) * 320 + b * 80 + d) * 9 + s] = w1[a * 4 + b] * w2[(c * 80 + d) * 9 + s];
              }
            }
          }
        }
      }
      expect("down_blocks.0.resnets.1.conv2.weight", delta, 320, 320, 3, 3);
    }
    // A full difference with a bias difference (ComfyUI's .diff and .diff_b; LyCORIS full.py).
    expect("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", put(FULL + ".diff", DType.F16, 0.01, 320, 320), 320, 320);
    expect("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias", put(FULL + ".diff_b", DType.F16, 0.01, 320), 320);
    // LoRA with LyCORIS DoRA: dora_scale [out, 1] (wd_on_out) and [1, in] (per input channel).
    dora(DORA_OUT, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.weight", 320, 320, true);
    dora(DORA_IN, "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight", 320, 1280, false);
    {
      double[] down = put(LORA + ".lora_down.weight", DType.F32, 0.1, 4, 320);
      double[] up = put(LORA + ".lora_up.weight", DType.F32, 0.1, 320, 4);
      alpha(LORA, 4);
      expect("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.weight", product(up, down, 320, 4, 320), 320, 320);
    }
    Path file = folder.resolve("lycoris.safetensors");
    Safetensors.write(file, tensors, Map.of("ss_network_module", "lycoris.kohya"));
    return file;
  }

  private double[] loha(String name, int out, int inner, int rank, double alpha) {
    double[] first = product(put(name + ".hada_w1_a", DType.F32, 0.2, out, rank), put(name + ".hada_w1_b", DType.F32, 0.2, rank, inner), out, rank, inner);
    double[] second = product(put(name + ".hada_w2_a", DType.F32, 0.2, out, rank), put(name + ".hada_w2_b", DType.F32, 0.2, rank, inner), out, rank, inner);
    alpha(name, alpha);
    double scale = alpha / rank;
    for (int i = 0; i < first.length; i++) {
      first[i] = scale * first[i] * second[i];
    }
    return first;
  }

  private void dora(String name, String weight, int out, int in, boolean perOutput) {
    double[] down = put(name + ".lora_down.weight", DType.F32, 0.1, 4, in);
    double[] up = put(name + ".lora_up.weight", DType.F32, 0.1, out, 4);
    alpha(name, 2);
    double[] delta = product(up, down, out, 4, in);
    for (int i = 0; i < delta.length; i++) {
      delta[i] *= 0.5;
    }
    double[] magnitude = perOutput ? put(name + ".dora_scale", DType.F32, 1, out, 1) : put(name + ".dora_scale", DType.F32, 1, 1, in);
    for (int i = 0; i < magnitude.length; i++) {
      magnitude[i] = Math.abs(magnitude[i]) + 0.5;
    }
    TensorData stored = TensorData.ofDoubles(magnitude, DType.F32, perOutput ? new long[] {out, 1} : new long[] {1, in});
    tensors.put(name + ".dora_scale", stored);
    magnitude = stored.toDoubleArray();
    doras.put(weight, new double[][] {delta, magnitude, {perOutput ? 1 : 0}});
    shapes.put(weight, new long[] {out, in});
  }

  /** A seeded Gaussian tensor of {@code dtype} with deviation {@code sd}, and its exact values. */
  private double[] put(String name, DType dtype, double sd, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = sd * random.nextGaussian();
    }
    TensorData tensor = TensorData.ofDoubles(values, dtype, shape);
    tensors.put(name, tensor);
    return tensor.toDoubleArray();
  }

  private void alpha(String module, double alpha) {
    tensors.put(module + ".alpha", TensorData.ofDoubles(new double[] {alpha}, DType.F32));
  }

  private void expect(String weight, double[] delta, long... shape) {
    deltas.put(weight, delta);
    shapes.put(weight, shape);
  }

  private static double[] product(double[] left, double[] right, int m, int r, int n) {
    double[] result = new double[m * n];
    for (int o = 0; o < m; o++) {
      for (int i = 0; i < n; i++) {
        double sum = 0;
        for (int p = 0; p < r; p++) {
          sum += left[o * r + p] * right[p * n + i];
        }
        result[o * n + i] = sum;
      }
    }
    return result;
  }

  /** torch.kron(w1, w2)·scale: element [a·c₂ + c, b·d₂ + d] = w1[a, b]·w2[c, d]. */
  private static double[] kron(double[] w1, int a1, int b1, double[] w2, int c2, int d2, double scale) {
    double[] result = new double[a1 * c2 * b1 * d2];
    for (int a = 0; a < a1; a++) {
      for (int c = 0; c < c2; c++) {
        for (int b = 0; b < b1; b++) {
          for (int d = 0; d < d2; d++) {
            result[(a * c2 + c) * (b1 * d2) + b * d2 + d] = scale * w1[a * b1 + b] * w2[c * d2 + d];
          }
        }
      }
    }
    return result;
  }

  /** The base: every adapted weight and the to_out bias, plus a tensor no module touches. */
  private Path base(DType dtype) throws IOException {
    Random values = new Random(7);
    Map<String, TensorData> weights = new LinkedHashMap<>();
    weights.put("conv_in.weight", randomTensor(values, dtype, 320, 4, 3, 3));
    for (Map.Entry<String, long[]> entry : shapes.entrySet()) {
      weights.put(entry.getKey(), randomTensor(values, dtype, entry.getValue()));
    }
    Path base = folder.resolve("base-" + dtype.safetensorsName() + ".safetensors");
    Safetensors.write(base, weights, Map.of());
    return base;
  }

  /** Values of deviation 0.05; float8 bases are random codes of magnitude below 1. */
  private static TensorData randomTensor(Random random, DType dtype, long... shape) {
    int count = Math.toIntExact(TensorData.numel(shape));
    if (dtype == DType.F8_E4M3 || dtype == DType.F8_E5M2) {
      byte[] codes = new byte[count];
      int below = dtype == DType.F8_E4M3 ? 0x38 : 0x3C;
      for (int i = 0; i < count; i++) {
        codes[i] = (byte) (random.nextInt(below) | (random.nextBoolean() ? 0x80 : 0));
      }
      return TensorData.of(dtype, shape, ByteBuffer.wrap(codes));
    }
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = 0.05 * random.nextGaussian();
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }

  @Test
  void readsEveryKindWithItsShape() throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    Map<String, String> kinds = new LinkedHashMap<>();
    adapter.modules().values().forEach(module -> kinds.put(module.key().path(), module.kindName()));
    assertThat(kinds).containsEntry("down_blocks.0.resnets.0.conv1", "LoCon (Tucker)")
        .containsEntry("down_blocks.0.resnets.0.conv2", "LoHa (Tucker)")
        .containsEntry("down_blocks.0.resnets.1.conv1", "LoHa")
        .containsEntry("down_blocks.0.resnets.1.conv2", "LoKr")
        .containsEntry("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", "full difference+bias")
        .containsEntry("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v", "LoRA+DoRA")
        .containsEntry("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q", "LoRA")
        .hasSize(11);
    LoraModule flat = adapter.modules().get(ModuleKey.of(Component.UNET, "down_blocks.0.resnets.1.conv1"));
    assertThat(flat.weightShape()).as("a flattened LoHa convolution takes SD1.5's shape").containsExactly(320, 320, 3, 3);
    LoraModule tucker = adapter.modules().get(ModuleKey.of(Component.UNET, "down_blocks.0.resnets.0.conv1"));
    assertThat(tucker.weightShape()).as("the Tucker core gives the kernel, not lora_down").containsExactly(320, 320, 3, 3);
    assertThat(tucker.down().shape()).containsExactly(4, 320, 3, 3);
    for (LoraModule module : adapter.modules().values()) {
      if (module.magnitude().isPresent()) {
        continue;
      }
      String name = module.key().path() + ".weight";
      assertThat(Relative.error(module.deltaF64(), deltas.get(name))).as("ΔW of %s", name).isLessThan(1e-14);
    }
  }

  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
  void fusedValuesAreTheExactUpdateRoundedOnceAndARestoreGivesBackTheBytes(DType dtype) throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    Path base = base(dtype);
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, WEIGHT).build());
    FusedLora result = fuser.fuseInto(SafetensorsWeights.of(base, fused));
    assertThat(result.report().unmatched()).isEmpty();
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      for (String name : shapes.keySet()) {
        double[] weight = before.tensor(name).toDoubleArray();
        double[] expected = new double[weight.length];
        if (doras.containsKey(name)) {
          expected = dora(weight, doras.get(name), WEIGHT);
        } else {
          double[] delta = deltas.get(name);
          for (int i = 0; i < weight.length; i++) {
            expected[i] = weight[i] + WEIGHT * delta[i];
          }
        }
        ByteBuffer actual = after.tensor(name).bytes().order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < expected.length; i++) {
          long bits = switch (dtype.byteSize()) {
            case 4 -> actual.getInt(i * 4);
            case 2 -> actual.getShort(i * 2) & 0xffff;
            default -> actual.get(i) & 0xff;
          };
          if (bits != Nearest.code(expected[i], dtype)) {
            // Float64 sums in another order differ in the last bits: where the value lies within
            // 1e-12 of a rounding boundary either neighbour is the float64 value rounded once.
            assertThat(bits)
                .as("%s %s[%d], float64 value %s", dtype, name, i, expected[i])
                .isIn(Nearest.code(expected[i] * (1 - 1e-12), dtype), Nearest.code(expected[i] * (1 + 1e-12), dtype));
          }
        }
      }
      assertThat(after.tensor("conv_in.weight")).isEqualTo(before.tensor("conv_in.weight"));
    }
    Path restored = folder.resolve("restored.safetensors");
    fuser.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    assertThat(Files.readAllBytes(restored)).as("restored %s base", dtype).isEqualTo(Files.readAllBytes(base));
  }

  /**
   * With {@link DoraMagnitude.Weighting#BLEND} the DoRA modules are W + w·(DoRA(W) − W), DoRA at
   * weight 1 (ComfyUI's {@code weight_decompose}: {@code weight += strength * (weight_calc -
   * weight)}); the other kinds fuse as by default; the recipe says so, and a restore gives back
   * the base's bytes.
   */
  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F32", "F16", "BF16"})
  void doraBlendFusesTheBaseBlendedWithDoraAtWeightOne(DType dtype) throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    Path base = base(dtype);
    Path fused = folder.resolve("blend.safetensors");
    Path plain = folder.resolve("plain.safetensors");
    LoraMerger merger = LoraMerger.builder().add(adapter, WEIGHT).build();
    LoraFuser fuser = LoraFuser.builder().merger(merger).doraWeighting(DoraMagnitude.Weighting.BLEND).build();
    fuser.fuseInto(SafetensorsWeights.of(base, fused));
    LoraFuser.of(merger).fuseInto(SafetensorsWeights.of(base, plain));
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused);
        SafetensorsFile byDefault = SafetensorsFile.open(plain)) {
      assertThat(after.metadata().get(LoraMerger.RECIPE_KEY)).contains("\"dora_weighting\":\"blend\"");
      assertThat(byDefault.metadata().get(LoraMerger.RECIPE_KEY)).doesNotContain("dora_weighting");
      for (String name : shapes.keySet()) {
        if (!doras.containsKey(name)) {
          assertThat(after.tensor(name)).as("%s, not DoRA", name).isEqualTo(byDefault.tensor(name));
          continue;
        }
        double[] weight = before.tensor(name).toDoubleArray();
        double[] atOne = dora(weight, doras.get(name), 1);
        ByteBuffer actual = after.tensor(name).bytes().order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer weightInside = byDefault.tensor(name).bytes().order(ByteOrder.LITTLE_ENDIAN);
        int differing = 0;
        for (int i = 0; i < weight.length; i++) {
          double expected = weight[i] + WEIGHT * (atOne[i] - weight[i]);
          long bits = dtype.byteSize() == 4 ? actual.getInt(i * 4) : actual.getShort(i * 2) & 0xffff;
          if (bits != Nearest.code(expected, dtype)) {
            assertThat(bits)
                .as("%s %s[%d], float64 value %s", dtype, name, i, expected)
                .isIn(Nearest.code(expected * (1 - 1e-12), dtype), Nearest.code(expected * (1 + 1e-12), dtype));
          }
          differing += bits != (dtype.byteSize() == 4 ? weightInside.getInt(i * 4) : weightInside.getShort(i * 2) & 0xffff) ? 1 : 0;
        }
        assertThat(differing).as("%s: the blend is not the weight inside the norm", name).isGreaterThan(weight.length / 10);
      }
    }
    Path restored = folder.resolve("restored.safetensors");
    fuser.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    assertThat(Files.readAllBytes(restored)).as("restored %s base", dtype).isEqualTo(Files.readAllBytes(base));
  }

  /**
   * LyCORIS's apply_weight_decompose at weight w inside the norm, as PEFT weighs it: V = W + w·ΔW,
   * then V·(m / (‖V‖ + ε)), ε = float32's epsilon, the norm per output row or per input column.
   */
  private static double[] dora(double[] weight, double[][] dora, double w) {
    double[] delta = dora[0];
    double[] m = dora[1];
    boolean perOutput = dora[2][0] == 1;
    int count = m.length;
    int out = perOutput ? count : weight.length / count;
    int in = weight.length / out;
    double[] v = new double[weight.length];
    for (int i = 0; i < v.length; i++) {
      v[i] = weight[i] + w * delta[i];
    }
    double epsilon = Math.scalb(1.0, -23);
    double[] result = new double[v.length];
    for (int k = 0; k < count; k++) {
      double sum = 0;
      for (int j = 0; j < (perOutput ? in : out); j++) {
        double x = perOutput ? v[k * in + j] : v[j * in + k];
        sum += x * x;
      }
      double factor = m[k] / (Math.sqrt(sum) + epsilon);
      for (int j = 0; j < (perOutput ? in : out); j++) {
        int index = perOutput ? k * in + j : j * in + k;
        result[index] = v[index] * factor;
      }
    }
    return result;
  }

  @Test
  void aFloat8ValueBeyondTheRangeIsRefusedBeforeAnythingIsWritten() throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    Path base = base(DType.F8_E4M3);
    assertThatThrownBy(
            () -> LoraFuser.of(LoraMerger.builder().add(adapter, 1e5).build()).fuseInto(SafetensorsWeights.of(base, folder.resolve("out.safetensors"))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("module 'unet.down_blocks.0.")
        .hasMessageContaining("beyond the range of F8_E4M3");
    assertThat(Files.exists(folder.resolve("out.safetensors"))).isFalse();
  }

  @Test
  void kohyaRoundTripKeepsEveryTensorOfEveryKind() throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    Path copy = folder.resolve("copy.safetensors");
    LoraFiles.write(adapter, copy, LoraFormat.KOHYA);
    LoraAdapter back = LoraFiles.read(copy);
    assertThat(back.modules()).isEqualTo(adapter.modules());
    try (SafetensorsFile file = SafetensorsFile.open(copy)) {
      assertThat(file.tensors().stream().map(spec -> spec.name()))
          .containsAll(tensors.keySet());
    }
  }

  @Test
  void aLoraOnlyLayoutRefusesOtherKindsNamingTheModuleAndTakesTuckerAsItsFactors() throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    assertThatThrownBy(() -> LoraFiles.write(adapter, folder.resolve("out.safetensors"), LoraFormat.DIFFUSERS))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("which the diffusers layout cannot hold");
    assertThat(Stream.of(folder.toFile().list())).doesNotContain("out.safetensors");
    LoraModule tucker = adapter.modules().get(ModuleKey.of(Component.UNET, "down_blocks.0.resnets.0.conv1"));
    Path converted = folder.resolve("tucker.safetensors");
    LoraFiles.write(LoraAdapter.builder().name("tucker").add(tucker).build(), converted, LoraFormat.DIFFUSERS);
    LoraModule back = LoraFiles.read(converted).modules().values().iterator().next();
    assertThat(back.adapterKind()).as("a Tucker LoCon is written as its exact LoRA factors").isEqualTo(AdapterKind.LORA);
    assertThat(Relative.error(back.deltaF64(), tucker.deltaF64())).isLessThan(1e-15);
  }

  @Test
  void mergingMaterialisesOtherKindsAndRefusesDora() throws IOException {
    LoraAdapter adapter = LoraFiles.read(lycorisFile());
    LoraAdapter.Builder additive = LoraAdapter.builder().name("additive");
    adapter.modules().values().stream()
        .filter(module -> module.magnitude().isEmpty() && module.biasDiff().isEmpty())
        .forEach(additive::add);
    LoraAdapter merged = LoraMerger.builder().add(additive.build(), WEIGHT).exactSvd(true).dtype(DType.F32).merge();
    for (LoraModule module : merged.modules().values()) {
      String name = module.key().path() + ".weight";
      assertThat(module.adapterKind()).isEqualTo(AdapterKind.LORA);
      double[] expected = deltas.get(name).clone();
      for (int i = 0; i < expected.length; i++) {
        expected[i] *= WEIGHT;
      }
      // Re-ranked to the update's rank bound by an SVD of the float32 update: exact to float32.
      assertThat(Relative.error(module.deltaF64(), expected)).as("merged ΔW of %s", name).isLessThan(1e-5);
    }
    assertThatThrownBy(() -> LoraMerger.builder().add(adapter, 1).merge())
        .isInstanceOf(LoraMergeException.class)
        .hasMessageMatching("(?s).*cannot merge module 'unet\\..*', a (LoRA\\+DoRA|full difference\\+bias): .*");
  }

  /**
   * A PEFT DoRA folder (peft/utils/save_and_load.py saves the magnitude as
   * {@code base_model.model.<path>.lora_magnitude_vector}, one value per output row): fused, each
   * weight is m / ‖W + w·s·B·A‖ · (W + w·s·B·A) with the norm per output row and no ε (peft
   * tuners/lora/dora.py), rounded once; written back as PEFT it is the same adapter, and the
   * kohya layout refuses it.
   */
  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F32", "BF16"})
  void peftDoraFusesWithTheWeightInsideTheNorm(DType dtype) throws IOException {
    String path = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2";
    Map<String, TensorData> peft = new LinkedHashMap<>();
    double[] down = put("base_model.model." + path + ".lora_A.weight", DType.F32, 0.1, 8, 1280);
    double[] up = put("base_model.model." + path + ".lora_B.weight", DType.F32, 0.1, 320, 8);
    double[] magnitude = put("base_model.model." + path + ".lora_magnitude_vector", DType.F32, 0.2, 320);
    for (int i = 0; i < magnitude.length; i++) {
      magnitude[i] = Math.abs(magnitude[i]) + 1;
    }
    TensorData stored = TensorData.ofDoubles(magnitude, DType.F32, 320);
    tensors.put("base_model.model." + path + ".lora_magnitude_vector", stored);
    magnitude = stored.toDoubleArray();
    peft.putAll(tensors);
    Path folderPath = folder.resolve("dora");
    Files.createDirectories(folderPath);
    Safetensors.write(folderPath.resolve("adapter_model.safetensors"), peft, Map.of());
    Files.writeString(folderPath.resolve("adapter_config.json"),
        "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 4, \"use_dora\": true}");
    LoraAdapter adapter = LoraFiles.read(folderPath);
    LoraModule module = adapter.modules().values().iterator().next();
    assertThat(module.kindName()).isEqualTo("LoRA+DoRA");
    assertThat(module.magnitude().orElseThrow().epsilon()).isZero();

    String weightName = path + ".weight";
    shapes.put(weightName, new long[] {320, 1280});
    Path base = base(dtype);
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser.of(LoraMerger.builder().add(adapter, WEIGHT).build()).fuseInto(SafetensorsWeights.of(base, fused));
    double[] delta = product(up, down, 320, 8, 1280);
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      double[] weight = before.tensor(weightName).toDoubleArray();
      ByteBuffer actual = after.tensor(weightName).bytes().order(ByteOrder.LITTLE_ENDIAN);
      for (int o = 0; o < 320; o++) {
        double sum = 0;
        for (int i = 0; i < 1280; i++) {
          double v = weight[o * 1280 + i] + WEIGHT * 0.5 * delta[o * 1280 + i];
          sum += v * v;
        }
        double factor = magnitude[o] / Math.sqrt(sum);
        for (int i = 0; i < 1280; i++) {
          int index = o * 1280 + i;
          double expected = (weight[index] + WEIGHT * 0.5 * delta[index]) * factor;
          long bits = dtype == DType.F32 ? actual.getInt(index * 4) : actual.getShort(index * 2) & 0xffff;
          assertThat(bits)
              .as("%s %s[%d], float64 value %s", dtype, weightName, index, expected)
              .isIn(Nearest.code(expected * (1 - 1e-12), dtype), Nearest.code(expected * (1 + 1e-12), dtype));
        }
      }
    }
    Path copy = folder.resolve("copy");
    LoraFiles.write(adapter, copy, LoraFormat.PEFT);
    assertThat(LoraFiles.read(copy).modules()).isEqualTo(adapter.modules());
    assertThat(Files.readString(copy.resolve("adapter_config.json"))).containsPattern("\"use_dora\"\\s*:\\s*true");
    assertThatThrownBy(() -> LoraFiles.write(adapter, folder.resolve("kohya.safetensors"), LoraFormat.KOHYA))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("has a PEFT DoRA magnitude, which the kohya/LyCORIS layout cannot hold exactly");
  }

  @Test
  void aDoraModuleMergesToALoraOnlyWithTheBaseWeights() throws IOException {
    LoraAdapter.Builder only = LoraAdapter.builder().name("dora");
    LoraFiles.read(lycorisFile()).modules().values().stream().filter(module -> module.magnitude().isPresent()).forEach(only::add);
    LoraAdapter dora = only.build();
    Path base = base(DType.F32);
    try (SafetensorsFile file = SafetensorsFile.open(base)) {
      // At full rank (320) the exact SVD keeps DoRA(W) − W, which rescales W too, to float32.
      LoraAdapter merged = LoraMerger.builder().add(dora, WEIGHT).rank(320).exactSvd(true).dtype(DType.F32)
          .baseWeights(key -> java.util.Optional.of(file.tensor(key.path() + ".weight")))
          .merge();
      assertThat(merged.modules()).hasSize(2);
      for (LoraModule module : merged.modules().values()) {
        String name = module.key().path() + ".weight";
        double[] weight = file.tensor(name).toDoubleArray();
        double[] expected = dora(weight, doras.get(name), WEIGHT);
        for (int i = 0; i < expected.length; i++) {
          expected[i] -= weight[i];
        }
        assertThat(module.isPlainLora()).isTrue();
        assertThat(Relative.error(module.deltaF64(), expected)).as("DoRA(W) − W of %s", name).isLessThan(1e-5);
      }
    }
  }

  /** The relative Frobenius error of {@code actual} against {@code expected}. */
  private static final class Relative {
    static double error(double[] actual, double[] expected) {
      assertThat(actual).hasSameSizeAs(expected);
      double difference = 0;
      double norm = 0;
      for (int i = 0; i < actual.length; i++) {
        difference += (actual[i] - expected[i]) * (actual[i] - expected[i]);
        norm += expected[i] * expected[i];
      }
      return Math.sqrt(difference / norm);
    }
  }

  /**
   * The code of the value nearest to x in a floating-point format, ties to the even code, found
   * by a binary search over the format's positive codes (ordered by value) with exact BigDecimal
   * distances; overflow where the nearest would be the code past the largest finite one.
   */
  static final class Nearest {
    static long code(double x, DType dtype) {
      if (dtype == DType.F32) {
        return Float.floatToRawIntBits((float) x);
      }
      IntToDoubleFunction decode;
      int max;
      int sign;
      switch (dtype) {
        case F16 -> {
          decode = FloatFormats::fromFloat16;
          max = 0x7BFF;
          sign = 0x8000;
        }
        case BF16 -> {
          decode = bits -> FloatFormats.fromBFloat16(bits);
          max = 0x7F7F;
          sign = 0x8000;
        }
        case F8_E4M3 -> {
          decode = FloatFormats::fromFloat8E4M3;
          max = 0x7E;
          sign = 0x80;
        }
        case F8_E5M2 -> {
          decode = FloatFormats::fromFloat8E5M2;
          max = 0x7B;
          sign = 0x80;
        }
        default -> throw new AssertionError(dtype);
      }
      double magnitude = Math.abs(x);
      int low = 0;
      int high = max;
      while (low < high) {
        int middle = (low + high + 1) >>> 1;
        if (decode.applyAsDouble(middle) <= magnitude) {
          low = middle;
        } else {
          high = middle - 1;
        }
      }
      double next = low < max ? decode.applyAsDouble(low + 1) : 2 * decode.applyAsDouble(max) - decode.applyAsDouble(max - 1);
      BigDecimal below = new BigDecimal(magnitude).subtract(new BigDecimal(decode.applyAsDouble(low)));
      BigDecimal above = new BigDecimal(next).subtract(new BigDecimal(magnitude));
      int compared = below.compareTo(above);
      int code = compared < 0 || (compared == 0 && (low & 1) == 0) ? low : low + 1;
      if (code > max) {
        return -1;
      }
      return (Double.doubleToRawLongBits(x) < 0 ? sign : 0) | code;
    }
  }
}

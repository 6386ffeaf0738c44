package dev.loramerge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import org.junit.jupiter.api.Test;

class LoraModuleTest {
  private static final ModuleKey KEY = ModuleKey.parse("unet.mid_block.attentions.0.proj_in");

  @Test
  void linearDeltaIsScaleTimesUpTimesDown() {
    // A = [[1, 2, 3], [4, 5, 6]] (r=2, in=3); B = [[1, 0], [0, 1], [1, 1], [2, -1]] (out=4)
    TensorData down = TensorData.ofFloats(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
    TensorData up = TensorData.ofFloats(new float[] {1, 0, 0, 1, 1, 1, 2, -1}, 4, 2);
    LoraModule module = LoraModule.of(KEY, down, up, 1.0);
    assertThat(module.scale()).isEqualTo(0.5);
    assertThat(module.deltaF64())
        .containsExactly(0.5, 1, 1.5, 2, 2.5, 3, 2.5, 3.5, 4.5, -1, -0.5, 0);
    assertThat(module.weightShape()).containsExactly(4, 3);
  }

  @Test
  void rsLoraScalesBySquareRootOfRank() {
    TensorData down = TensorData.ofFloats(new float[16], 4, 4);
    TensorData up = TensorData.ofFloats(new float[16], 4, 4);
    assertThat(LoraModule.of(KEY, down, up, 8, ScaleRule.RSLORA).scale()).isCloseTo(4.0, within(0.0));
    assertThat(LoraModule.of(KEY, down, up, 8, ScaleRule.STANDARD).scale()).isEqualTo(2.0);
  }

  @Test
  void convDeltaFlattensTheKernel() {
    float[] a = new float[2 * 3 * 3 * 3];
    for (int i = 0; i < a.length; i++) {
      a[i] = i;
    }
    TensorData down = TensorData.ofFloats(a, 2, 3, 3, 3);
    TensorData up = TensorData.ofFloats(new float[] {1, -1}, 1, 2, 1, 1);
    LoraModule module = LoraModule.of(KEY, down, up, 2);
    assertThat(module.kind()).isEqualTo(LoraModule.Kind.CONV);
    assertThat(module.weightShape()).containsExactly(1, 3, 3, 3);
    double[] delta = module.deltaF64();
    for (int i = 0; i < 27; i++) {
      assertThat(delta[i]).as("element %d: row 0 minus row 1", i).isEqualTo(-27.0);
    }
  }

  @Test
  void rejectsFactorsThatDoNotPair() {
    TensorData down = TensorData.ofFloats(new float[12], 4, 3);
    TensorData up = TensorData.ofFloats(new float[6], 2, 3);
    assertThatThrownBy(() -> LoraModule.of(KEY, down, up, 4))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'unet.mid_block.attentions.0.proj_in': down [4, 3] has rank 4 but up [2, 3] has rank 3");
    assertThatThrownBy(() -> LoraModule.of(KEY, down, TensorData.ofFloats(new float[8], 2, 4, 1), 4))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "module 'unet.mid_block.attentions.0.proj_in': down [4, 3] and up [2, 4, 1] are neither"
                + " linear ([r, in] and [out, r]) nor convolution ([r, in, k, k] and [out, r, 1, 1]) LoRA factors");
    assertThatThrownBy(() -> LoraModule.of(KEY, down, TensorData.ofFloats(new float[8], 2, 4), Double.NaN))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'unet.mid_block.attentions.0.proj_in': alpha is NaN, expected a finite number");
  }

  private static TensorData seeded(java.util.Random random, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) random.nextGaussian();
    }
    return TensorData.ofFloats(values, shape);
  }

  @Test
  void tuckerLokrIsTheKroneckerProductOfW1AndTheRebuiltW2() {
    // ComfyUI lokr.py: w2 = einsum('i j k l, j r, i p -> p r k l', t2, w2_b, w2_a), ΔW = kron(w1, w2)
    // with w1 unsqueezed to [a, b, 1, 1], times alpha / w2_b.shape[0] (w2 is factored).
    java.util.Random random = new java.util.Random(3);
    TensorData w1 = seeded(random, 2, 3);
    TensorData t2 = seeded(random, 2, 2, 3, 3);
    TensorData w2a = seeded(random, 2, 4);
    TensorData w2b = seeded(random, 2, 5);
    LoraModule module = LoraModule.ofKind(
        KEY, AdapterKind.LOKR, java.util.Map.of("lokr_w1", w1, "lokr_t2", t2, "lokr_w2_a", w2a, "lokr_w2_b", w2b), 1,
        java.util.Optional.empty());
    assertThat(module.weightShape()).containsExactly(8, 15, 3, 3);
    assertThat(module.scale()).isEqualTo(0.5);
    double[] first = w1.toDoubleArray();
    double[] t = t2.toDoubleArray();
    double[] a = w2a.toDoubleArray();
    double[] b = w2b.toDoubleArray();
    double[] delta = module.deltaF64();
    for (int i1 = 0; i1 < 2; i1++) {
      for (int p = 0; p < 4; p++) {
        for (int j1 = 0; j1 < 3; j1++) {
          for (int r = 0; r < 5; r++) {
            for (int s = 0; s < 9; s++) {
              double w2 = 0;
              for (int i = 0; i < 2; i++) {
                for (int j = 0; j < 2; j++) {
                  w2 += t[(i * 2 + j) * 9 + s] * b[j * 5 + r] * a[i * 4 + p];
                }
              }
              double expected = 0.5 * first[i1 * 3 + j1] * w2;
              assertThat(delta[((i1 * 4 + p) * 15 + j1 * 5 + r) * 9 + s]).isCloseTo(expected, within(1e-13));
            }
          }
        }
      }
    }
  }

  @Test
  void lokrWithoutAFactoredPartIgnoresAlphaAndLohaDividesByItsRank() {
    java.util.Random random = new java.util.Random(4);
    LoraModule lokr = LoraModule.ofKind(
        KEY, AdapterKind.LOKR, java.util.Map.of("lokr_w1", seeded(random, 2, 2), "lokr_w2", seeded(random, 3, 3)), 7,
        java.util.Optional.empty());
    assertThat(lokr.scale()).as("LoKr with both factors full").isEqualTo(1.0);
    assertThat(lokr.rank()).isZero();
    LoraModule loha = LoraModule.ofKind(
        KEY, AdapterKind.LOHA,
        java.util.Map.of("hada_w1_a", seeded(random, 4, 2), "hada_w1_b", seeded(random, 2, 6), "hada_w2_a", seeded(random, 4, 2),
            "hada_w2_b", seeded(random, 2, 6)), 3, java.util.Optional.empty());
    assertThat(loha.scale()).isEqualTo(1.5);
    assertThat(loha.updateRankBound()).as("rank of a Hadamard product").isEqualTo(4);
    assertThatThrownBy(loha::down).isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'unet.mid_block.attentions.0.proj_in' is a LoHa: it has no LoRA factors");
    assertThatThrownBy(() -> LoraModule.ofKind(
            KEY, AdapterKind.LOHA, java.util.Map.of("hada_w1_a", seeded(random, 4, 2)), 3, java.util.Optional.empty()))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("a LoHa needs [hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b], found [hada_w1_a]");
  }

  @Test
  void peftDoraRenormalisesEachOutputChannelOfAConvolutionWithTheWeightInsideTheNorm() {
    // PEFT dora.py (DoraConv2dLayer.get_weight_norm): norm over dims 1.. of W + scaling·ΔW, no ε;
    // the fused weight is magnitude / norm · (W + scaling·ΔW).
    java.util.Random random = new java.util.Random(5);
    LoraModule plain = LoraModule.of(KEY, seeded(random, 2, 3, 3, 3), seeded(random, 4, 2, 1, 1), 2);
    TensorData magnitude = seeded(random, 4);
    LoraModule dora = plain.withMagnitude(DoraMagnitude.peft(magnitude));
    assertThat(dora.kindName()).isEqualTo("LoRA+DoRA");
    assertThat(dora.isPlainLora()).isFalse();
    double[] weight = seeded(random, 4, 3, 3, 3).toDoubleArray();
    double[] delta = plain.deltaF64();
    double[] m = magnitude.toDoubleArray();
    double[] fused = dora.fusedF64(weight, 0.7);
    for (int o = 0; o < 4; o++) {
      double sum = 0;
      for (int i = 0; i < 27; i++) {
        double v = weight[o * 27 + i] + 0.7 * delta[o * 27 + i];
        sum += v * v;
      }
      for (int i = 0; i < 27; i++) {
        double v = weight[o * 27 + i] + 0.7 * delta[o * 27 + i];
        assertThat(fused[o * 27 + i]).isCloseTo(m[o] / Math.sqrt(sum) * v, within(1e-14));
      }
    }
    // ComfyUI's blend (comfy/weight_adapter/base.py weight_decompose): W + w·(DoRA(W) − W), DoRA at
    // weight 1; a module without a magnitude is W + w·ΔW either way.
    double[] blended = dora.fusedF64(weight, 0.7, DoraMagnitude.Weighting.BLEND);
    for (int o = 0; o < 4; o++) {
      double sum = 0;
      for (int i = 0; i < 27; i++) {
        double v = weight[o * 27 + i] + delta[o * 27 + i];
        sum += v * v;
      }
      for (int i = 0; i < 27; i++) {
        double v = weight[o * 27 + i] + delta[o * 27 + i];
        double expected = weight[o * 27 + i] + 0.7 * (m[o] / Math.sqrt(sum) * v - weight[o * 27 + i]);
        assertThat(blended[o * 27 + i]).isCloseTo(expected, within(1e-14));
      }
    }
    assertThat(plain.fusedF64(weight, 0.7, DoraMagnitude.Weighting.BLEND)).containsExactly(plain.fusedF64(weight, 0.7));
    assertThatThrownBy(() -> plain.withMagnitude(DoraMagnitude.peft(seeded(random, 5))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("DoRA magnitude [5] does not fit a [4, 3, 3, 3] weight (expected one value per output row)");
  }
}

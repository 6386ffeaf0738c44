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
}

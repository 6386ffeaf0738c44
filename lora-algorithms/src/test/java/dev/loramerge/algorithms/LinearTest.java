package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.LoraMerger;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class LinearTest {
  private static final ModuleKey KEY = ModuleKey.of(Component.UNET, "mid_block.attentions.0.proj_in");

  @Test
  void eachFactorIsTheFloat32SumOfScaledInputsRoundedOnceToTheOutputType() {
    // 3000×8 and 8×1500 factors span several of the blocks an encoded sum is made in; a bf16, a
    // float32 and a negative weight make every block convert and the signs differ between A and B.
    SplittableRandom random = new SplittableRandom(17);
    LoraModule[] inputs = {
      LoraModule.of(KEY, gaussian(random, DType.BF16, 8, 1500), gaussian(random, DType.BF16, 3000, 8), 4),
      LoraModule.of(KEY, gaussian(random, DType.F32, 8, 1500), gaussian(random, DType.F32, 3000, 8), 16),
      LoraModule.of(KEY, gaussian(random, DType.BF16, 8, 1500), gaussian(random, DType.BF16, 3000, 8), 8)
    };
    double[] weights = {0.7, -1.3, 0.25};
    for (DType output : new DType[] {DType.F16, DType.BF16, DType.F32, DType.F64}) {
      LoraMerger.Builder merger = LoraMerger.builder().algorithm(Linear.of()).dtype(output);
      for (int i = 0; i < inputs.length; i++) {
        merger.add(LoraAdapter.builder().name("input" + i).add(inputs[i]).build(), weights[i]);
      }
      LoraModule merged = merger.merge().modules().get(KEY);
      float[] up = null;
      float[] down = null;
      for (int i = 0; i < inputs.length; i++) {
        double c = weights[i] * inputs[i].scale();
        up = plus(up, inputs[i].up().toFloatArray(), (float) Math.sqrt(Math.abs(c)));
        down = plus(down, inputs[i].down().toFloatArray(), (float) (Math.signum(c) * Math.sqrt(Math.abs(c))));
      }
      assertThat(merged.up().dtype()).isEqualTo(output);
      assertThat(merged.up().shape()).containsExactly(3000, 8);
      assertThat(merged.down().shape()).containsExactly(8, 1500);
      assertThat(firstNotRoundedOnce(merged.up(), up)).as("%s up: first element off (-1: none)", output).isEqualTo(-1);
      assertThat(firstNotRoundedOnce(merged.down(), down)).as("%s down: first element off (-1: none)", output).isEqualTo(-1);
    }
  }

  /** {@code sum + coefficient·values} in float32, element by element, or the scaled values. */
  private static float[] plus(float[] sum, float[] values, float coefficient) {
    float[] result = new float[values.length];
    for (int i = 0; i < values.length; i++) {
      result[i] = sum == null ? values[i] * coefficient : sum[i] + values[i] * coefficient;
    }
    return result;
  }

  private static int firstNotRoundedOnce(TensorData tensor, float[] expected) {
    assertThat(tensor.numel()).isEqualTo(expected.length);
    for (int i = 0; i < expected.length; i++) {
      double want = switch (tensor.dtype()) {
        case F16 -> FloatFormats.fromFloat16(FloatFormats.toFloat16(expected[i]));
        case BF16 -> FloatFormats.fromBFloat16(FloatFormats.toBFloat16(expected[i]));
        default -> expected[i];
      };
      if (Double.doubleToLongBits(tensor.getDouble(i)) != Double.doubleToLongBits(want)) {
        return i;
      }
    }
    return -1;
  }

  private static TensorData gaussian(SplittableRandom random, DType dtype, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (0.05 * random.nextGaussian());
    }
    return TensorData.ofFloats(values, dtype, shape);
  }
}

package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.AdapterKind;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The methods on full updates take any kind whose update can be materialised, beside LoRAs, and
 * run on it exactly as on a LoRA's s·B·A; the methods on the factors refuse it and name their
 * variant on full updates.
 *
 * <p>Expected values are computed here in float64 from the stored tensors: LoHa's ΔW =
 * α/r₁·(w1a·w1b) ⊙ (w2a·w2b) (LyCORIS {@code lycoris/modules/loha.py}, {@code make_weight} times
 * {@code scale = alpha / lora_dim}); the methods as PEFT's {@code
 * _svd_generalized_task_arithmetic_weighted_adapter} ({@code src/peft/tuners/lora/model.py}) runs
 * them on each adapter's delta weight: {@code magnitude_prune} keeps the {@code int(density·n)}
 * largest magnitudes, {@code ties} elects the sign of the sum of the pruned tensors (≥ 0 → +),
 * weights them and takes the mean of the agreeing non-zero entries ({@code prune}, {@code
 * calculate_majority_sign_mask}, {@code disjoint_merge} in {@code src/peft/utils/merge_utils.py});
 * breadcrumbs drops the {@code int(gamma·n)} largest and keeps the next {@code int(density·n)}
 * (mergekit {@code mergekit/sparsify.py}, {@code magnitude_outliers}).
 */
class FullUpdateKindsTest {
  private static final ModuleKey KEY = TinyLora.KEYS[0];
  private static final int ROWS = 10;
  private static final int COLUMNS = 12;
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final double DENSITY = 0.5;
  private static final long SEED = 42;
  private static final List<MergeMethod> FULL_UPDATE_METHODS = List.of(
      MergeMethod.TIES_SVD, MergeMethod.DARE_LINEAR_SVD, MergeMethod.DARE_TIES_SVD, MergeMethod.MAGNITUDE_PRUNE_SVD,
      MergeMethod.BREADCRUMBS, MergeMethod.DELLA);

  private static TensorData gaussian(Random random, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (0.4 * random.nextGaussian());
    }
    return TensorData.ofFloats(values, shape);
  }

  /** A LoHa of rank 2 with α = 3 (s = 1.5) on {@link #KEY}. */
  private static LoraAdapter loha() {
    Random random = new Random(5);
    LoraModule module = LoraModule.ofKind(
        KEY, AdapterKind.LOHA,
        Map.of("hada_w1_a", gaussian(random, ROWS, 2), "hada_w1_b", gaussian(random, 2, COLUMNS),
            "hada_w2_a", gaussian(random, ROWS, 2), "hada_w2_b", gaussian(random, 2, COLUMNS)),
        3, Optional.empty());
    return LoraAdapter.builder().name("loha").add(module).build();
  }

  /** α/r₁·(w1a·w1b) ⊙ (w2a·w2b), in float64 from the stored values. */
  private static double[] lohaDelta(LoraModule module) {
    double[] w1 = product(module.parts().get("hada_w1_a"), module.parts().get("hada_w1_b"));
    double[] w2 = product(module.parts().get("hada_w2_a"), module.parts().get("hada_w2_b"));
    double[] delta = new double[w1.length];
    for (int i = 0; i < delta.length; i++) {
      delta[i] = 3.0 / 2 * w1[i] * w2[i];
    }
    return delta;
  }

  private static double[] product(TensorData left, TensorData right) {
    int rows = Math.toIntExact(left.dim(0));
    int inner = Math.toIntExact(left.dim(1));
    int columns = Math.toIntExact(right.dim(1));
    double[] a = left.toDoubleArray();
    double[] b = right.toDoubleArray();
    double[] result = new double[rows * columns];
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < columns; c++) {
        for (int k = 0; k < inner; k++) {
          result[r * columns + c] += a[r * inner + k] * b[k * columns + c];
        }
      }
    }
    return result;
  }

  /** The indices of {@code values} by descending magnitude, ties by index. */
  private static Integer[] byMagnitude(double[] values) {
    Integer[] order = IntStream.range(0, values.length).boxed().toArray(Integer[]::new);
    Arrays.sort(order, Comparator.comparingDouble((Integer e) -> -Math.abs(values[e])).thenComparingInt(e -> e));
    return order;
  }

  /** {@code values} with only the positions {@code [from, from + count)} of {@link #byMagnitude} kept. */
  private static double[] kept(double[] values, int from, int count) {
    Integer[] order = byMagnitude(values);
    double[] result = new double[values.length];
    for (int position = from; position < from + count; position++) {
      result[order[position]] = values[order[position]];
    }
    return result;
  }

  private static double[] magnitudePruneSvd(double[][] deltas, double[] weights) {
    double[] sum = new double[deltas[0].length];
    for (int i = 0; i < deltas.length; i++) {
      double[] pruned = kept(deltas[i], 0, (int) (DENSITY * sum.length));
      for (int e = 0; e < sum.length; e++) {
        sum[e] += weights[i] * pruned[e];
      }
    }
    return sum;
  }

  private static double[] tiesSvd(double[][] deltas, double[] weights) {
    int n = deltas[0].length;
    double[][] pruned = new double[deltas.length][];
    for (int i = 0; i < deltas.length; i++) {
      pruned[i] = kept(deltas[i], 0, (int) (DENSITY * n));
    }
    double[] result = new double[n];
    for (int e = 0; e < n; e++) {
      double total = 0;
      for (double[] tensor : pruned) {
        total += tensor[e];
      }
      double elected = total >= 0 ? 1 : -1;
      double sum = 0;
      int agreeing = 0;
      for (int i = 0; i < pruned.length; i++) {
        if (Math.signum(pruned[i][e]) == elected) {
          sum += weights[i] * pruned[i][e];
          agreeing++;
        }
      }
      result[e] = sum / Math.max(agreeing, 1);
    }
    return result;
  }

  private static double[] breadcrumbs(double[][] deltas, double[] weights) {
    int n = deltas[0].length;
    int keep = (int) (DENSITY * n);
    int top = Math.min((int) (Breadcrumbs.DEFAULT_GAMMA * n), n - keep);
    double[] sum = new double[n];
    for (int i = 0; i < deltas.length; i++) {
      double[] pruned = kept(deltas[i], top, keep);
      for (int e = 0; e < n; e++) {
        sum[e] += weights[i] * pruned[e];
      }
    }
    return sum;
  }

  @Test
  void deterministicMethodsOnALohaAndALoraAreTheMethodOnTheMaterialisedUpdates() {
    LoraAdapter loha = loha();
    double[] weights = {0.7, 0.5};
    double[][] deltas = {
        TinyLora.weightedSum(KEY, new LoraAdapter[] {STYLE}, new double[] {1}), lohaDelta(loha.modules().get(KEY))};
    Map<MergeMethod, double[]> expected = Map.of(
        MergeMethod.TIES_SVD, tiesSvd(deltas, weights),
        MergeMethod.MAGNITUDE_PRUNE_SVD, magnitudePruneSvd(deltas, weights),
        MergeMethod.BREADCRUMBS, breadcrumbs(deltas, weights));
    for (Map.Entry<MergeMethod, double[]> entry : expected.entrySet()) {
      MergeAlgorithm algorithm = entry.getKey().create(OptionalDouble.of(DENSITY), MajoritySign.TOTAL, SEED);
      LoraAdapter merged = LoraMerger.builder()
          .add(STYLE, weights[0]).add(loha, weights[1]).algorithm(algorithm).rank(ROWS).exactSvd(true).merge();
      LoraModule module = merged.modules().get(KEY);
      assertThat(module.isPlainLora()).as("%s gives a LoRA", entry.getKey()).isTrue();
      assertThat(TinyLora.relativeError(module.deltaF64(), entry.getValue()))
          .as("%s of a LoRA and a LoHa at full rank against the float64 method on their updates", entry.getKey())
          .isLessThan(1e-5);
    }
  }

  /**
   * A LoRA with small-integer factors and s = 1, whose B·A is exact in float32, and a full
   * difference holding that product: the same ΔW, so every method on full updates, seeded or not,
   * must write the same bytes for either.
   */
  @Test
  void aFullDifferenceMergesToTheBytesOfALoraWithTheSameUpdate() {
    Random random = new Random(3);
    float[] up = new float[ROWS * 2];
    float[] down = new float[2 * COLUMNS];
    for (int i = 0; i < up.length; i++) {
      up[i] = random.nextInt(7) - 3;
    }
    for (int i = 0; i < down.length; i++) {
      down[i] = random.nextInt(7) - 3;
    }
    double[] product = product(TensorData.ofFloats(up, ROWS, 2), TensorData.ofFloats(down, 2, COLUMNS));
    float[] diff = new float[product.length];
    for (int i = 0; i < diff.length; i++) {
      diff[i] = (float) product[i];
    }
    LoraAdapter lora = LoraAdapter.builder().name("lora")
        .add(LoraModule.of(KEY, TensorData.ofFloats(down, 2, COLUMNS), TensorData.ofFloats(up, ROWS, 2), 2)).build();
    LoraAdapter full = LoraAdapter.builder().name("full")
        .add(LoraModule.ofKind(KEY, AdapterKind.FULL, Map.of("diff", TensorData.ofFloats(diff, ROWS, COLUMNS)), 1,
            Optional.empty()))
        .build();
    assertThat(full.modules().get(KEY).deltaF64()).as("the full difference's update").containsExactly(product);
    for (MergeMethod method : FULL_UPDATE_METHODS) {
      MergeAlgorithm algorithm = method.create(OptionalDouble.of(DENSITY), MajoritySign.TOTAL, SEED);
      LoraModule fromLora = LoraMerger.builder()
          .add(STYLE, 0.7).add(lora, 0.6).algorithm(algorithm).rank(4).merge().modules().get(KEY);
      LoraModule fromFull = LoraMerger.builder()
          .add(STYLE, 0.7).add(full, 0.6).algorithm(algorithm).rank(4).merge().modules().get(KEY);
      assertThat(fromFull.up().bytes()).as("%s: up from the full difference against the LoRA", method)
          .isEqualTo(fromLora.up().bytes());
      assertThat(fromFull.down().bytes()).as("%s: down from the full difference against the LoRA", method)
          .isEqualTo(fromLora.down().bytes());
    }
  }

  @ParameterizedTest
  @EnumSource(value = MergeMethod.class, names = {"LINEAR", "TIES", "DARE_LINEAR", "DARE_TIES", "MAGNITUDE_PRUNE"})
  void methodsOnTheFactorsRefuseALohaNamingTheModuleAndTheirVariant(MergeMethod method) {
    MergeAlgorithm algorithm = method.create(OptionalDouble.of(DENSITY), MajoritySign.TOTAL, SEED);
    String variant = method == MergeMethod.LINEAR ? "svd" : method.methodName() + "_svd";
    assertThatThrownBy(() -> LoraMerger.builder().add(STYLE, 0.7).add(loha(), 0.5).algorithm(algorithm).merge())
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("cannot merge module '" + KEY + "' of adapter 'loha', a LoHa")
        .hasMessageContaining(method.methodName() + " works on LoRA factors")
        .hasMessageContaining("use " + variant + ", the same method on the full updates");
  }

  @ParameterizedTest
  @EnumSource(value = MergeMethod.class, names = {"TIES_SVD", "DELLA", "SVD"})
  void aFuseWithAReRankingMethodAddsItsMergeOfTheLoha(MergeMethod method) throws IOException {
    LoraAdapter loha = loha();
    MergeAlgorithm algorithm = method.create(OptionalDouble.of(DENSITY), MajoritySign.TOTAL, SEED);
    LoraMerger merger =
        LoraMerger.builder().add(STYLE, 0.7).add(loha, 0.5).algorithm(algorithm).rank(ROWS).exactSvd(true).build();
    Map<String, TensorData> base = TinyLora.base(DType.F32, 3);
    String name = KEY.path() + ".weight";
    double[] expected = base.get(name).toDoubleArray();
    double[] update = merger.merge().modules().get(KEY).deltaF64();
    for (int i = 0; i < expected.length; i++) {
      expected[i] += update[i];
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = new HashMap<>();
      base.forEach((weight, tensor) -> arrays.put(weight, manager.create(tensor.toFloatArray(), new Shape(tensor.shape()))));
      LoraFuser.of(merger).fuseInto(WeightTarget.of(arrays));
      float[] fused = arrays.get(name).toFloatArray();
      for (int i = 0; i < fused.length; i++) {
        assertThat((double) fused[i])
            .as("%s, %s[%d]: the fused weight against W plus the merged adapter's update", method, name, i)
            .isCloseTo(expected[i], within(1e-6 * (1 + Math.abs(expected[i]))));
      }
    }
  }

  @Test
  void aFuseWithAMethodOnTheFactorsRefusesALohaNamingItsVariant() {
    LoraMerger merger = LoraMerger.builder().add(STYLE, 0.7).add(loha(), 0.5).algorithm(Ties.of(DENSITY)).build();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = new HashMap<>();
      TinyLora.base(DType.F32, 3)
          .forEach((weight, tensor) -> arrays.put(weight, manager.create(tensor.toFloatArray(), new Shape(tensor.shape()))));
      assertThatThrownBy(() -> LoraFuser.of(merger).fuseInto(WeightTarget.of(arrays)))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("module '" + KEY + "' is a LoHa")
          .hasMessageContaining("ties_svd is the same method on the full updates and fuses it");
    }
  }
}

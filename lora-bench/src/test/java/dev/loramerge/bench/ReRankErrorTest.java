package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethod;
import dev.loramerge.arch.Architecture;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.synthetic.SyntheticLora;
import java.util.List;
import java.util.OptionalDouble;
import java.util.Set;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;
import org.junit.jupiter.api.Test;

class ReRankErrorTest {
  /** Two 640×640 modules: big enough that the merger re-ranks them by the randomized SVD. */
  private static final Set<String> PATHS =
      Set.of(
          "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
          "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k");
  private static final int RANK = 6;

  private static LoraAdapter adapter(String name, double alpha, long seed) {
    return SyntheticLora.builder(Architecture.sdxl())
        .modules(spec -> PATHS.contains(spec.key().path()))
        .rank(32)
        .alpha(alpha)
        .dtype(DType.F32)
        .seed(seed)
        .name(name)
        .build();
  }

  /**
   * With density 1 magnitude_prune_svd keeps every entry, so its dense update is the weighted sum
   * itself, which the test computes in float64 from the inputs and truncates by a dense SVD
   * (EJML); the randomized re-rank is the test's own merge.
   */
  @Test
  void measuresTheDistanceAndTheExcessOverTheOptimalTruncation() {
    LoraAdapter style = adapter("style", 32, 1);
    LoraAdapter subject = adapter("subject", 16, 2);
    MergeAlgorithm keepAll = MergeMethod.MAGNITUDE_PRUNE_SVD.create(OptionalDouble.of(1.0), MajoritySign.TOTAL, 0);

    ReRankError measured = ReRankError.measure(style, 0.7, subject, 0.5, keepAll, RANK, PATHS.size());

    LoraAdapter randomized =
        LoraMerger.builder().add(style, 0.7).add(subject, 0.5).algorithm(keepAll).rank(RANK).dtype(DType.F32).merge();
    double apart = 0;
    double best = 0;
    double randomizedTail = 0;
    double optimalTail = 0;
    for (LoraModule first : style.modules().values()) {
      int rows = Math.toIntExact(first.outFeatures());
      double[] sum = weightedSum(List.of(first, subject.modules().get(first.key())), List.of(0.7, 0.5));
      double[] truncated = truncation(new DMatrixRMaj(rows, sum.length / rows, true, sum), RANK).getData();
      double[] approximated = randomized.modules().get(first.key()).deltaF64();
      for (int i = 0; i < sum.length; i++) {
        apart += square(approximated[i] - truncated[i]);
        best += square(truncated[i]);
        randomizedTail += square(sum[i] - approximated[i]);
        optimalTail += square(sum[i] - truncated[i]);
      }
    }
    double expectedExcess = Math.sqrt(randomizedTail / optimalTail) - 1;
    double expectedRelative = Math.sqrt(apart / best);

    assertThat(expectedExcess).as("the randomized re-rank is not exact on a rank-64 sum cut to %d", RANK).isGreaterThan(1e-6);
    assertThat(measured.excess())
        .as("excess error ‖D − D̂‖ / ‖D − D_r‖ − 1, against the float64 sum and its dense truncation")
        .isCloseTo(expectedExcess, within(1e-3 * expectedExcess + 1e-8));
    assertThat(measured.relative())
        .as("relative distance ‖D̂ − D_r‖ / ‖D_r‖, against the float64 sum's dense truncation")
        .isCloseTo(expectedRelative, within(1e-3 * expectedRelative));
  }

  /** The best rank-k approximation of {@code matrix}: its k largest singular triplets. */
  private static DMatrixRMaj truncation(DMatrixRMaj matrix, int rank) {
    SingularValueDecomposition_F64<DMatrixRMaj> svd = DecompositionFactory_DDRM.svd(matrix.numRows, matrix.numCols, true, true, true);
    assertThat(svd.decompose(matrix.copy())).as("EJML's SVD converges").isTrue();
    DMatrixRMaj u = svd.getU(null, false);
    DMatrixRMaj w = svd.getW(null);
    DMatrixRMaj v = svd.getV(null, true);
    SingularOps_DDRM.descendingOrder(u, false, w, v, true);
    DMatrixRMaj scaled = new DMatrixRMaj(matrix.numRows, rank);
    CommonOps_DDRM.mult(CommonOps_DDRM.extract(u, 0, u.numRows, 0, rank), CommonOps_DDRM.extract(w, 0, rank, 0, rank), scaled);
    DMatrixRMaj result = new DMatrixRMaj(matrix.numRows, matrix.numCols);
    CommonOps_DDRM.mult(scaled, CommonOps_DDRM.extract(v, 0, rank, 0, v.numCols), result);
    return result;
  }

  private static double square(double value) {
    return value * value;
  }

  private static double[] weightedSum(List<LoraModule> modules, List<Double> weights) {
    double[] sum = null;
    for (int m = 0; m < modules.size(); m++) {
      double[] delta = modules.get(m).deltaF64();
      if (sum == null) {
        sum = new double[delta.length];
      }
      for (int i = 0; i < delta.length; i++) {
        sum[i] += weights.get(m) * delta[i];
      }
    }
    return sum;
  }
}

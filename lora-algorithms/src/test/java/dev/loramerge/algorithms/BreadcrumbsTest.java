package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.TinyLora;
import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.IntStream;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;
import org.junit.jupiter.api.Test;

/**
 * Breadcrumbs against an independent float64 implementation of its definition (Davari and
 * Belilovsky 2023; mergekit's {@code magnitude_outliers}): per adapter, the update sᵢ·BᵢAᵢ with its
 * ⌊gamma·n⌋ largest-magnitude entries and all but the next ⌊density·n⌋ zeroed, summed with the
 * weights, then truncated to the rank by the optimal (SVD) truncation.
 */
class BreadcrumbsTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 2, 2, 2);
  private static final double[] WEIGHTS = {0.7, 0.5};
  private static final double DENSITY = 0.6;
  private static final double GAMMA = 0.1;

  @Test
  void atFullRankTheMergeIsTheSumOfThePrunedUpdates() {
    LoraAdapter merged =
        LoraMerger.builder().algorithm(Breadcrumbs.of(DENSITY).withGamma(GAMMA)).add(STYLE, WEIGHTS[0]).add(SUBJECT, WEIGHTS[1]).rank(12).exactSvd(true).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      double[] expected = prunedSum(key);
      assertThat(TinyLora.relativeError(merged.modules().get(key).deltaF64(), expected))
          .as("%s: the merge against the float64 sum of the pruned updates", key)
          .isLessThan(1e-5);
    }
  }

  @Test
  void aLowerRankIsTheOptimalTruncationOfThatSum() {
    int rank = 3;
    LoraAdapter merged =
        LoraMerger.builder().algorithm(Breadcrumbs.of(DENSITY).withGamma(GAMMA)).add(STYLE, WEIGHTS[0]).add(SUBJECT, WEIGHTS[1]).rank(rank).exactSvd(true).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      int rows = Math.toIntExact(STYLE.modules().get(key).outFeatures());
      double[] expected = truncated(prunedSum(key), rows, rank);
      assertThat(merged.modules().get(key).rank()).isEqualTo(rank);
      assertThat(TinyLora.relativeError(merged.modules().get(key).deltaF64(), expected))
          .as("%s: the rank-%d merge against the optimal truncation of the pruned sum", key, rank)
          .isLessThan(1e-5);
    }
  }

  @Test
  void withoutOutliersDroppedItIsMagnitudePruningOfEachUpdate() {
    LoraAdapter merged =
        LoraMerger.builder().algorithm(Breadcrumbs.of(0.5).withGamma(0)).add(STYLE, 1).rank(12).exactSvd(true).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      double[] delta = STYLE.modules().get(key).deltaF64();
      double[] got = merged.modules().get(key).deltaF64();
      long kept = Arrays.stream(got).filter(value -> Math.abs(value) > 1e-4 * norm(delta) / Math.sqrt(delta.length)).count();
      assertThat(kept).as("%s: entries kept of %d", key, delta.length).isEqualTo(delta.length / 2);
    }
  }

  private static double[] prunedSum(ModuleKey key) {
    LoraAdapter[] inputs = {STYLE, SUBJECT};
    double[] sum = null;
    for (int i = 0; i < inputs.length; i++) {
      double[] delta = inputs[i].modules().get(key).deltaF64();
      if (sum == null) {
        sum = new double[delta.length];
      }
      int n = delta.length;
      int keep = (int) (DENSITY * n);
      int top = Math.min((int) (GAMMA * n), n - keep);
      Integer[] byMagnitude = IntStream.range(0, n).boxed().toArray(Integer[]::new);
      Arrays.sort(byMagnitude, Comparator.comparingDouble((Integer e) -> -Math.abs(delta[e])).thenComparingInt(e -> e));
      for (int position = top; position < top + keep; position++) {
        int e = byMagnitude[position];
        sum[e] += WEIGHTS[i] * delta[e];
      }
    }
    return sum;
  }

  /** The best rank-{@code rank} approximation of a rows × (n / rows) matrix, from EJML's SVD. */
  static double[] truncated(double[] matrix, int rows, int rank) {
    int columns = matrix.length / rows;
    SingularValueDecomposition_F64<DMatrixRMaj> svd = DecompositionFactory_DDRM.svd(rows, columns, true, true, false);
    assertThat(svd.decompose(DMatrixRMaj.wrap(rows, columns, matrix.clone()))).isTrue();
    DMatrixRMaj u = svd.getU(null, false);
    DMatrixRMaj v = svd.getV(null, false);
    double[] sigma = svd.getSingularValues();
    Integer[] order = IntStream.range(0, sigma.length).boxed().toArray(Integer[]::new);
    Arrays.sort(order, Comparator.comparingDouble((Integer k) -> -sigma[k]));
    double[] result = new double[matrix.length];
    for (int k = 0; k < rank; k++) {
      int component = order[k];
      for (int r = 0; r < rows; r++) {
        double left = u.get(r, component) * sigma[component];
        for (int c = 0; c < columns; c++) {
          result[r * columns + c] += left * v.get(c, component);
        }
      }
    }
    return result;
  }

  private static double norm(double[] values) {
    return Math.sqrt(Arrays.stream(values).map(value -> value * value).sum());
  }
}

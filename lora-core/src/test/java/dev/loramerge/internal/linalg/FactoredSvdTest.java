package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import java.util.Random;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.NormOps_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;
import org.junit.jupiter.api.Test;

/** Factored truncation against a dense float64 SVD of the materialized product. */
class FactoredSvdTest {
  private static DMatrixRMaj random(Random random, int rows, int cols) {
    DMatrixRMaj matrix = new DMatrixRMaj(rows, cols);
    for (int i = 0; i < matrix.data.length; i++) {
      matrix.data[i] = random.nextGaussian();
    }
    return matrix;
  }

  private static FactoredSvd truncate(DMatrixRMaj up, DMatrixRMaj down, int rank) {
    DMatrixRMaj gramUp = new DMatrixRMaj(up.numCols, up.numCols);
    CommonOps_DDRM.multTransA(up, up, gramUp);
    DMatrixRMaj gramDown = new DMatrixRMaj(down.numRows, down.numRows);
    CommonOps_DDRM.multTransB(down, down, gramDown);
    return FactoredSvd.of(gramUp, gramDown, sigma -> rank);
  }

  /** The best rank-k approximation by a dense SVD of the product. */
  private static DMatrixRMaj denseTruncation(DMatrixRMaj product, int rank, double[] sigmaOut) {
    SingularValueDecomposition_F64<DMatrixRMaj> svd =
        DecompositionFactory_DDRM.svd(product.numRows, product.numCols, true, true, true);
    assertThat(svd.decompose(product.copy())).isTrue();
    DMatrixRMaj u = svd.getU(null, false);
    DMatrixRMaj w = svd.getW(null);
    DMatrixRMaj v = svd.getV(null, true);
    SingularOps_DDRM.descendingOrder(u, false, w, v, true);
    for (int i = 0; i < sigmaOut.length; i++) {
      sigmaOut[i] = w.get(i, i);
    }
    DMatrixRMaj uk = CommonOps_DDRM.extract(u, 0, u.numRows, 0, rank);
    DMatrixRMaj wk = CommonOps_DDRM.extract(w, 0, rank, 0, rank);
    DMatrixRMaj vk = CommonOps_DDRM.extract(v, 0, rank, 0, v.numCols);
    DMatrixRMaj temp = new DMatrixRMaj(uk.numRows, rank);
    CommonOps_DDRM.mult(uk, wk, temp);
    DMatrixRMaj result = new DMatrixRMaj(product.numRows, product.numCols);
    CommonOps_DDRM.mult(temp, vk, result);
    return result;
  }

  @Test
  void matchesTheDenseTruncationOfTheProduct() {
    Random random = new Random(7);
    DMatrixRMaj up = random(random, 40, 12);
    DMatrixRMaj down = random(random, 12, 30);
    DMatrixRMaj product = new DMatrixRMaj(40, 30);
    CommonOps_DDRM.mult(up, down, product);
    for (int rank : new int[] {1, 5, 12}) {
      assertThat(relativeErrorAgainstDense(up, down, rank))
          .as("relative Frobenius error at rank %d", rank)
          .isLessThan(1e-10);
      FactoredSvd truncation = truncate(up, down, rank);
      double[] sigma = new double[12];
      denseTruncation(product, rank, sigma);
      for (int i = 0; i < 12; i++) {
        assertThat(truncation.singularValues()[i]).as("singular value %d", i).isCloseTo(sigma[i], within(1e-9 * sigma[0]));
      }
    }
  }

  /** B̂ (m×R) and Â (R×n) with column and row scales spread over {@code decades} powers of ten. */
  private static DMatrixRMaj[] graded(Random random, int m, int inner, int n, double decades) {
    DMatrixRMaj up = random(random, m, inner);
    DMatrixRMaj down = random(random, inner, n);
    for (int k = 0; k < inner; k++) {
      // Shuffled scales, so that the pivoted factorization has to reorder.
      double scale = Math.pow(10, -decades * ((k * 7) % inner) / (inner - 1));
      for (int row = 0; row < m; row++) {
        up.set(row, k, up.get(row, k) * scale);
      }
      for (int col = 0; col < n; col++) {
        down.set(k, col, down.get(k, col) * Math.sqrt(scale));
      }
    }
    return new DMatrixRMaj[] {up, down};
  }

  private static double relativeErrorAgainstDense(DMatrixRMaj up, DMatrixRMaj down, int rank) {
    DMatrixRMaj product = new DMatrixRMaj(up.numRows, down.numCols);
    CommonOps_DDRM.mult(up, down, product);
    FactoredSvd truncation = truncate(up, down, rank);
    DMatrixRMaj newUp = new DMatrixRMaj(up.numRows, rank);
    CommonOps_DDRM.mult(up, truncation.left(), newUp);
    DMatrixRMaj newDown = new DMatrixRMaj(rank, down.numCols);
    CommonOps_DDRM.mult(truncation.right(), down, newDown);
    DMatrixRMaj factored = new DMatrixRMaj(up.numRows, down.numCols);
    CommonOps_DDRM.mult(newUp, newDown, factored);
    DMatrixRMaj dense = denseTruncation(product, rank, new double[0]);
    DMatrixRMaj difference = new DMatrixRMaj(up.numRows, down.numCols);
    CommonOps_DDRM.subtract(factored, dense, difference);
    return NormOps_DDRM.normF(difference) / NormOps_DDRM.normF(dense);
  }

  @Test
  void staysExactOverTheRangeOfConditioningOfBothRoots() {
    // Column scales over 0 to 3.5 decades give Grams of condition up to 1e7, which the Cholesky
    // root takes; over 5 and 6 decades, 1e10 and 1e12, past its pivot floor, the eigen root. The
    // bounds are what the eigen root alone reaches (about 1e-15, and 7e-10 at 6 decades).
    double[] decades = {0, 2, 3.5, 5, 6};
    double[] bounds = {1e-13, 1e-13, 1e-13, 1e-13, 1e-8};
    for (int i = 0; i < decades.length; i++) {
      DMatrixRMaj[] factors = graded(new Random(11), 50, 16, 35, decades[i]);
      for (int rank : new int[] {1, 6, 16}) {
        assertThat(relativeErrorAgainstDense(factors[0], factors[1], rank))
            .as("relative Frobenius error at rank %d, column scales over %s decades", rank, decades[i])
            .isLessThan(bounds[i]);
      }
    }
  }

  @Test
  void nearlyDependentStacksMatchTheDenseTruncation() {
    // One adapter stacked with a copy of itself off by ε: Grams of condition about 1/ε², so the
    // Cholesky root at 1e-3, the eigen root at 1e-5 and 1e-7 (bounds as in the test above).
    Random random = new Random(5);
    DMatrixRMaj half = random(random, 30, 4);
    DMatrixRMaj up = new DMatrixRMaj(30, 8);
    CommonOps_DDRM.insert(half, up, 0, 0);
    CommonOps_DDRM.insert(half, up, 0, 4);
    double[] epsilons = {1e-3, 1e-5, 1e-7};
    double[] bounds = {1e-13, 1e-13, 1e-7};
    for (int i = 0; i < epsilons.length; i++) {
      DMatrixRMaj perturbed = up.copy();
      for (int row = 0; row < 30; row++) {
        for (int col = 4; col < 8; col++) {
          perturbed.set(row, col, perturbed.get(row, col) + epsilons[i] * random.nextGaussian());
        }
      }
      DMatrixRMaj down = random(random, 8, 25);
      for (int rank : new int[] {2, 4}) {
        assertThat(relativeErrorAgainstDense(perturbed, down, rank))
            .as("relative Frobenius error at rank %d, second adapter off the first by %s", rank, epsilons[i])
            .isLessThan(bounds[i]);
      }
    }
  }

  @Test
  void handlesRankDeficientStacks() {
    Random random = new Random(3);
    DMatrixRMaj half = random(random, 20, 3);
    // Two identical adapters stacked: B̂ = [B, B], Â = [A; A] has rank 3, not 6.
    DMatrixRMaj up = new DMatrixRMaj(20, 6);
    CommonOps_DDRM.insert(half, up, 0, 0);
    CommonOps_DDRM.insert(half, up, 0, 3);
    DMatrixRMaj downHalf = random(random, 3, 15);
    DMatrixRMaj down = new DMatrixRMaj(6, 15);
    CommonOps_DDRM.insert(downHalf, down, 0, 0);
    CommonOps_DDRM.insert(downHalf, down, 3, 0);
    DMatrixRMaj product = new DMatrixRMaj(20, 15);
    CommonOps_DDRM.mult(up, down, product);

    FactoredSvd truncation = truncate(up, down, 6);
    assertThat(truncation.rank()).as("rank is capped at the non-zero singular values").isEqualTo(3);
    DMatrixRMaj newUp = new DMatrixRMaj(20, 3);
    CommonOps_DDRM.mult(up, truncation.left(), newUp);
    DMatrixRMaj newDown = new DMatrixRMaj(3, 15);
    CommonOps_DDRM.mult(truncation.right(), down, newDown);
    DMatrixRMaj rebuilt = new DMatrixRMaj(20, 15);
    CommonOps_DDRM.mult(newUp, newDown, rebuilt);
    DMatrixRMaj difference = new DMatrixRMaj(20, 15);
    CommonOps_DDRM.subtract(rebuilt, product, difference);
    assertThat(NormOps_DDRM.normF(difference) / NormOps_DDRM.normF(product)).isLessThan(1e-10);
  }
}

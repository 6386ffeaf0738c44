package dev.loramerge.internal;

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
      FactoredSvd truncation = truncate(up, down, rank);
      DMatrixRMaj newUp = new DMatrixRMaj(40, rank);
      CommonOps_DDRM.mult(up, truncation.left(), newUp);
      DMatrixRMaj newDown = new DMatrixRMaj(rank, 30);
      CommonOps_DDRM.mult(truncation.right(), down, newDown);
      DMatrixRMaj factored = new DMatrixRMaj(40, 30);
      CommonOps_DDRM.mult(newUp, newDown, factored);

      double[] sigma = new double[12];
      DMatrixRMaj dense = denseTruncation(product, rank, sigma);
      DMatrixRMaj difference = new DMatrixRMaj(40, 30);
      CommonOps_DDRM.subtract(factored, dense, difference);
      assertThat(NormOps_DDRM.normF(difference) / NormOps_DDRM.normF(dense))
          .as("relative Frobenius error at rank %d", rank)
          .isLessThan(1e-10);
      for (int i = 0; i < 12; i++) {
        assertThat(truncation.singularValues()[i]).as("singular value %d", i).isCloseTo(sigma[i], within(1e-9 * sigma[0]));
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

package dev.loramerge.internal.linalg;

import static com.google.common.base.Preconditions.checkArgument;

import java.util.Arrays;
import java.util.function.ToIntFunction;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.EigenDecomposition_F64;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;

/**
 * The truncated SVD of a product B̂·Â (m×R times R×n) from its two R×R Gram matrices, without
 * ever forming the m×n product.
 *
 * <p>Any R_b, R_a with R_bᵀR_b = B̂ᵀB̂ and R_aᵀR_a = ÂÂᵀ give B̂ = Q_b R_b and Âᵀ = Q_a R_a
 * with Q orthonormal. The SVD of the R×R core R_b R_aᵀ = U Σ Wᵀ then gives B̂Â = (Q_b U) Σ (Q_a
 * W)ᵀ, so the best rank-k factors are B' = B̂·L and A' = P·Â with L = R_b⁻¹ U_k Σ_k (R×k) and
 * P = W_kᵀ R_a⁻ᵀ (k×R); U_k Σ_k is R_b R_aᵀ W_k, so U is never formed. R is the Gram's
 * pivoted Cholesky factor where the Gram is well conditioned, and otherwise Λ^½ Vᵀ from its
 * eigen-decomposition V Λ Vᵀ with eigenvalues below {@link #RELATIVE_EIGENVALUE_FLOOR} of the
 * largest treated as zero (the pseudo-inverse), which handles rank-deficient stacks; the
 * directions dropped carry less than 1e-6 of the largest singular value. Everything here runs in
 * float64 on R×R matrices: O(R³).
 *
 * <p>Instances are immutable results.
 */
public final class FactoredSvd {
  /** Eigenvalues of a Gram matrix (squared singular values) below this fraction of the largest are zero. */
  public static final double RELATIVE_EIGENVALUE_FLOOR = 1e-12;

  /** Rows a transpose reads before it moves on: 8 doubles, one cache line, per output row. */
  private static final int TRANSPOSE_BLOCK = 8;

  private final DMatrixRMaj left;
  private final DMatrixRMaj right;
  private final double[] singularValues;

  private FactoredSvd(DMatrixRMaj left, DMatrixRMaj right, double[] singularValues) {
    this.left = left;
    this.right = right;
    this.singularValues = singularValues;
  }

  /**
   * Truncates B̂·Â given {@code gramUp} = B̂ᵀB̂ and {@code gramDown} = ÂÂᵀ (both R×R, symmetric).
   *
   * @param rankOf chooses the kept rank k from all R singular values (descending); clamped to
   *     [1, number of non-zero singular values]
   */
  public static FactoredSvd of(DMatrixRMaj gramUp, DMatrixRMaj gramDown, ToIntFunction<double[]> rankOf) {
    int inner = gramUp.numRows;
    checkArgument(
        gramUp.numCols == inner && gramDown.numRows == inner && gramDown.numCols == inner,
        "Gram matrices must both be %sx%s", inner, inner);
    GramRoot up = GramRoot.of(gramUp);
    GramRoot down = GramRoot.of(gramDown);

    DMatrixRMaj core = new DMatrixRMaj(inner, inner);
    CommonOps_DDRM.multTransB(up.root(), down.root(), core);
    // Without U: L needs only U_k Σ_k, which is core·W_k, and accumulating U's rotations took
    // about a fifth of the decomposition.
    SingularValueDecomposition_F64<DMatrixRMaj> svd = DecompositionFactory_DDRM.svd(inner, inner, false, true, false);
    if (!svd.decompose(svd.inputModified() ? core.copy() : core)) {
      throw new ArithmeticException("SVD of the " + inner + "x" + inner + " core did not converge");
    }
    DMatrixRMaj w = svd.getW(null);
    DMatrixRMaj v = svd.getV(null, false);
    SingularOps_DDRM.descendingOrder(null, false, w, v, false);
    double[] sigma = new double[inner];
    int nonZero = 0;
    for (int i = 0; i < inner; i++) {
      sigma[i] = w.get(i, i);
      if (sigma[i] > 0) {
        nonZero++;
      }
    }
    int rank = Math.max(1, Math.min(Math.max(nonZero, 1), rankOf.applyAsInt(sigma.clone())));
    DMatrixRMaj wk = CommonOps_DDRM.extract(v, 0, inner, 0, rank);

    // L = R_b⁻¹ U_k Σ_k = R_b⁻¹ core W_k
    DMatrixRMaj left = up.solve(CommonOps_DDRM.mult(core, wk, null));

    // P = W_kᵀ R_a⁻ᵀ = (R_a⁻¹ W_k)ᵀ
    DMatrixRMaj right = CommonOps_DDRM.transpose(down.solve(wk), null);
    return new FactoredSvd(left, right, sigma);
  }

  /**
   * The best rank-k factors {B' (m×k), A' (k×n)} of {@code up}·{@code down} in float64,
   * row-major, without forming the product: the Gram matrices and the final products by {@link
   * DoubleProducts}, the R×R decompositions by {@link #of}.
   *
   * @param up B̂, m×R row-major
   * @param down Â, R×n row-major
   * @param rankOf chooses the kept rank k from all R singular values, as in {@link #of}
   */
  public static double[][] truncate(float[] up, float[] down, int inner, ToIntFunction<double[]> rankOf) {
    checkFactors(up.length, down.length, inner);
    int rows = up.length / inner;
    double[] upRows = new double[up.length];
    for (int first = 0; first < rows; first += TRANSPOSE_BLOCK) {
      int last = Math.min(rows, first + TRANSPOSE_BLOCK);
      for (int k = 0; k < inner; k++) {
        for (int row = first; row < last; row++) {
          upRows[k * rows + row] = up[row * inner + k];
        }
      }
    }
    double[] downRows = new double[down.length];
    for (int i = 0; i < down.length; i++) {
      downRows[i] = down[i];
    }
    return truncateRows(upRows, downRows, inner, rankOf);
  }

  /** {@link #truncate(float[], float[], int, ToIntFunction)} of float64 factors. */
  public static double[][] truncate(double[] up, double[] down, int inner, ToIntFunction<double[]> rankOf) {
    checkFactors(up.length, down.length, inner);
    return truncateRows(transposed(up, up.length / inner, inner), down, inner, rankOf);
  }

  /**
   * The transpose of a row-major rows×columns matrix, {@link #TRANSPOSE_BLOCK} rows at a time: a
   * column at a time, the writes a row of the output apart (10 or 80 KiB on SDXL shapes) all
   * fell into the same few sets of the L1 cache.
   */
  private static double[] transposed(double[] matrix, int rows, int columns) {
    double[] result = new double[matrix.length];
    for (int first = 0; first < rows; first += TRANSPOSE_BLOCK) {
      int last = Math.min(rows, first + TRANSPOSE_BLOCK);
      for (int column = 0; column < columns; column++) {
        for (int row = first; row < last; row++) {
          result[column * rows + row] = matrix[row * columns + column];
        }
      }
    }
    return result;
  }

  private static void checkFactors(int upLength, int downLength, int inner) {
    checkArgument(inner > 0 && upLength % inner == 0 && downLength % inner == 0,
        "factors of %s and %s entries do not share a rank of %s", upLength, downLength, inner);
  }

  /** The truncation from B̂ᵀ and Â, both R rows, row-major. */
  private static double[][] truncateRows(double[] upRows, double[] downRows, int inner, ToIntFunction<double[]> rankOf) {
    int rows = upRows.length / inner;
    int columns = downRows.length / inner;
    FactoredSvd svd =
        of(
            DMatrixRMaj.wrap(inner, inner, DoubleProducts.gram(upRows, inner, rows)),
            DMatrixRMaj.wrap(inner, inner, DoubleProducts.gram(downRows, inner, columns)),
            rankOf);
    int rank = svd.rank();
    // B' = B̂·L, computed as (Lᵀ·B̂ᵀ)ᵀ
    double[] newUpRows = DoubleProducts.product(CommonOps_DDRM.transpose(svd.left, null).data, rank, upRows, inner, rows);
    double[] newDown = DoubleProducts.product(svd.right.data, rank, downRows, inner, columns);
    fixSigns(newUpRows, newDown, rank);
    return new double[][] {transposed(newUpRows, rank, rows), newDown};
  }

  /**
   * Flips each component (a column of B' and the row of A' with it) whose up column's entry of
   * largest magnitude is negative, as scikit-learn's {@code svd_flip} does: a singular pair is
   * defined up to its sign, which otherwise depends on the root and the SVD routine, so that the
   * same update would be written with different factors by the Cholesky and the eigen path.
   *
   * @param upRows B'ᵀ, k×m row-major
   */
  private static void fixSigns(double[] upRows, double[] down, int rank) {
    int rows = upRows.length / rank;
    int columns = down.length / rank;
    for (int k = 0; k < rank; k++) {
      double largest = 0;
      for (int row = 0; row < rows; row++) {
        double value = upRows[k * rows + row];
        if (Math.abs(value) > Math.abs(largest)) {
          largest = value;
        }
      }
      if (largest < 0) {
        for (int row = 0; row < rows; row++) {
          upRows[k * rows + row] = -upRows[k * rows + row];
        }
        for (int column = 0; column < columns; column++) {
          down[k * columns + column] = -down[k * columns + column];
        }
      }
    }
  }

  /** The kept rank k. */
  public int rank() {
    return left.numCols;
  }

  /** L (R×k): the new up factor is B̂·L. A copy. */
  public DMatrixRMaj left() {
    return left.copy();
  }

  /** P (k×R): the new down factor is P·Â. A copy. */
  public DMatrixRMaj right() {
    return right.copy();
  }

  /** All R singular values of B̂·Â, descending (zeros for a rank-deficient stack). */
  public double[] singularValues() {
    return singularValues.clone();
  }

  @Override
  public String toString() {
    return "FactoredSvd{rank=" + rank() + ", singularValues=" + Arrays.toString(singularValues) + "}";
  }
}

package dev.loramerge.internal;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
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
 * <p>With B̂ᵀB̂ = V_b Λ_b V_bᵀ and ÂÂᵀ = V_a Λ_a V_aᵀ, B̂ = Q_b R_b and Âᵀ = Q_a R_a where
 * R = Λ^½ Vᵀ and Q has orthonormal columns. The SVD of the R×R core R_b R_aᵀ = U Σ Wᵀ gives
 * B̂Â = (Q_b U) Σ (Q_a W)ᵀ, so the best rank-k factors are B' = B̂·L and A' = P·Â with
 * L = V_b Λ_b^-½ U_k Σ_k (R×k) and P = W_kᵀ Λ_a^-½ V_aᵀ (k×R). Eigenvalues below {@link
 * #RELATIVE_EIGENVALUE_FLOOR} of the largest are treated as zero (the pseudo-inverse), which
 * handles rank-deficient stacks; the directions dropped carry less than 1e-6 of the largest
 * singular value. Everything here runs in float64 on R×R matrices: O(R³).
 *
 * <p>Instances are immutable results.
 */
public final class FactoredSvd {
  /** Eigenvalues of a Gram matrix (squared singular values) below this fraction of the largest are zero. */
  public static final double RELATIVE_EIGENVALUE_FLOOR = 1e-12;

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
    SquareRoot up = SquareRoot.of(gramUp);
    SquareRoot down = SquareRoot.of(gramDown);

    DMatrixRMaj core = new DMatrixRMaj(inner, inner);
    CommonOps_DDRM.multTransB(up.root, down.root, core);
    SingularValueDecomposition_F64<DMatrixRMaj> svd = DecompositionFactory_DDRM.svd(inner, inner, true, true, false);
    if (!svd.decompose(core)) {
      throw new ArithmeticException("SVD of the " + inner + "x" + inner + " core did not converge");
    }
    DMatrixRMaj u = svd.getU(null, false);
    DMatrixRMaj w = svd.getW(null);
    DMatrixRMaj v = svd.getV(null, false);
    SingularOps_DDRM.descendingOrder(u, false, w, v, false);
    double[] sigma = new double[inner];
    int nonZero = 0;
    for (int i = 0; i < inner; i++) {
      sigma[i] = w.get(i, i);
      if (sigma[i] > 0) {
        nonZero++;
      }
    }
    int rank = Math.max(1, Math.min(Math.max(nonZero, 1), rankOf.applyAsInt(sigma.clone())));

    // L = V_b Λ_b^-½ U_k Σ_k
    DMatrixRMaj uk = CommonOps_DDRM.extract(u, 0, inner, 0, rank);
    for (int col = 0; col < rank; col++) {
      for (int row = 0; row < inner; row++) {
        uk.set(row, col, uk.get(row, col) * sigma[col] * up.inverseSqrt[row]);
      }
    }
    DMatrixRMaj left = new DMatrixRMaj(inner, rank);
    CommonOps_DDRM.mult(up.vectors, uk, left);

    // P = W_kᵀ Λ_a^-½ V_aᵀ
    DMatrixRMaj wk = CommonOps_DDRM.extract(v, 0, inner, 0, rank);
    for (int col = 0; col < rank; col++) {
      for (int row = 0; row < inner; row++) {
        wk.set(row, col, wk.get(row, col) * down.inverseSqrt[row]);
      }
    }
    DMatrixRMaj right = new DMatrixRMaj(rank, inner);
    CommonOps_DDRM.multTransAB(wk, down.vectors, right);
    return new FactoredSvd(left, right, sigma);
  }

  /**
   * Returns the best rank-k factors {B' (m×k), A' (k×n)} of {@code up}·{@code down} (m×R times
   * R×n) in float64, without forming the product: the Gram matrices and the final products in
   * DJL, the R×R decompositions by {@link #of}. The results belong to the managers of {@code up}
   * and {@code down}; the two small factors converted from EJML belong to {@code manager}.
   *
   * @param rankOf chooses the kept rank k from all R singular values, as in {@link #of}
   */
  public static NDArray[] truncate(NDManager manager, NDArray up, NDArray down, ToIntFunction<double[]> rankOf) {
    NDArray up64 = up.toType(DataType.FLOAT64, false);
    NDArray down64 = down.toType(DataType.FLOAT64, false);
    FactoredSvd svd =
        of(
            NdArrays.toMatrix(up64.transpose().matMul(up64)),
            NdArrays.toMatrix(down64.matMul(down64.transpose())),
            rankOf);
    NDArray newUp = up64.matMul(NdArrays.fromMatrix(manager, svd.left()));
    NDArray newDown = NdArrays.fromMatrix(manager, svd.right()).matMul(down64);
    return new NDArray[] {newUp, newDown};
  }

  /**
   * W = V Λ^-½ over the kept eigenvalues of {@code gram} = YᵀY (n×n'), so that Y·W has
   * orthonormal columns spanning Y's.
   */
  public static DMatrixRMaj whitening(DMatrixRMaj gram) {
    SquareRoot root = SquareRoot.of(gram);
    int kept = 0;
    for (double value : root.inverseSqrt) {
      if (value > 0) {
        kept++;
      }
    }
    DMatrixRMaj result = new DMatrixRMaj(gram.numRows, Math.max(kept, 1));
    int column = 0;
    for (int i = 0; i < root.inverseSqrt.length && column < kept; i++) {
      if (root.inverseSqrt[i] > 0) {
        for (int row = 0; row < gram.numRows; row++) {
          result.set(row, column, root.vectors.get(row, i) * root.inverseSqrt[i]);
        }
        column++;
      }
    }
    return result;
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

  /** R = Λ^½ Vᵀ of a symmetric positive semi-definite G = V Λ Vᵀ, with Λ^-½ (zero where Λ is). */
  private static final class SquareRoot {
    final DMatrixRMaj vectors;
    final DMatrixRMaj root;
    final double[] inverseSqrt;

    private SquareRoot(DMatrixRMaj vectors, DMatrixRMaj root, double[] inverseSqrt) {
      this.vectors = vectors;
      this.root = root;
      this.inverseSqrt = inverseSqrt;
    }

    static SquareRoot of(DMatrixRMaj gram) {
      int n = gram.numRows;
      EigenDecomposition_F64<DMatrixRMaj> eigen = DecompositionFactory_DDRM.eig(n, true, true);
      if (!eigen.decompose(gram.copy())) {
        throw new ArithmeticException("eigen-decomposition of a " + n + "x" + n + " Gram matrix did not converge");
      }
      double largest = 0;
      for (int i = 0; i < n; i++) {
        largest = Math.max(largest, eigen.getEigenvalue(i).getReal());
      }
      DMatrixRMaj vectors = new DMatrixRMaj(n, n);
      DMatrixRMaj root = new DMatrixRMaj(n, n);
      double[] inverseSqrt = new double[n];
      for (int i = 0; i < n; i++) {
        double lambda = eigen.getEigenvalue(i).getReal();
        DMatrixRMaj vector = eigen.getEigenVector(i);
        boolean kept = lambda > RELATIVE_EIGENVALUE_FLOOR * largest && lambda > 0;
        double sqrt = kept ? Math.sqrt(lambda) : 0;
        inverseSqrt[i] = kept ? 1 / sqrt : 0;
        for (int row = 0; row < n; row++) {
          double component = vector == null ? 0 : vector.get(row);
          vectors.set(row, i, component);
          root.set(i, row, sqrt * component);
        }
      }
      return new SquareRoot(vectors, root, inverseSqrt);
    }
  }
}

package dev.loramerge.internal.linalg;

import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.EigenDecomposition_F64;

/** R = Λ^½ Vᵀ of G = V Λ Vᵀ, with Λ^-½ (zero where Λ is). */
final class EigenRoot implements GramRoot {
  /** V. */
  private final DMatrixRMaj vectors;
  private final DMatrixRMaj root;
  /** Λ^-½ on the diagonal, zero for the dropped directions. */
  private final double[] inverseSqrt;

  private EigenRoot(DMatrixRMaj vectors, DMatrixRMaj root, double[] inverseSqrt) {
    this.vectors = vectors;
    this.root = root;
    this.inverseSqrt = inverseSqrt;
  }

  static EigenRoot of(DMatrixRMaj gram) {
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
      boolean kept = lambda > FactoredSvd.RELATIVE_EIGENVALUE_FLOOR * largest && lambda > 0;
      double sqrt = kept ? Math.sqrt(lambda) : 0;
      inverseSqrt[i] = kept ? 1 / sqrt : 0;
      for (int row = 0; row < n; row++) {
        double component = vector == null ? 0 : vector.get(row);
        vectors.set(row, i, component);
        root.set(i, row, sqrt * component);
      }
    }
    return new EigenRoot(vectors, root, inverseSqrt);
  }

  @Override
  public DMatrixRMaj root() {
    return root;
  }

  @Override
  public DMatrixRMaj solve(DMatrixRMaj rhs) {
    // R⁺ = V Λ^-½
    DMatrixRMaj scaled = rhs.copy();
    for (int row = 0; row < scaled.numRows; row++) {
      for (int col = 0; col < scaled.numCols; col++) {
        scaled.set(row, col, scaled.get(row, col) * inverseSqrt[row]);
      }
    }
    DMatrixRMaj result = new DMatrixRMaj(vectors.numRows, rhs.numCols);
    CommonOps_DDRM.mult(vectors, scaled, result);
    return result;
  }
}

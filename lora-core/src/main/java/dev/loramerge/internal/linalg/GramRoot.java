package dev.loramerge.internal.linalg;

import org.ejml.data.DMatrixRMaj;

/** A factor R with RᵀR = G of a symmetric positive semi-definite Gram matrix G. */
interface GramRoot {
  /**
   * The Cholesky root when G is well enough conditioned that it is as accurate as the
   * eigen-decomposition's, which costs much more at these sizes (EJML); the eigen root
   * otherwise, which also drops G's null space.
   */
  static GramRoot of(DMatrixRMaj gram) {
    GramRoot cholesky = CholeskyRoot.of(gram);
    return cholesky != null ? cholesky : EigenRoot.of(gram);
  }

  /** R (R×R). */
  DMatrixRMaj root();

  /** R⁻¹·{@code rhs} (R×c), R's pseudo-inverse where it is singular. */
  DMatrixRMaj solve(DMatrixRMaj rhs);
}

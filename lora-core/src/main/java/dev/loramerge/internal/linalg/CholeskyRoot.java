package dev.loramerge.internal.linalg;

import org.ejml.data.DMatrixRMaj;

/**
 * R = Lᵀ·Π from the Cholesky factorization Π·G·Πᵀ = L·Lᵀ with diagonal pivoting (Π a
 * permutation, L lower triangular).
 *
 * <p>Both roots make Q = B̂·R⁻¹ as far from orthonormal as about machine epsilon times G's
 * condition number, and the truncation's error is of that order. With pivoting the last pivot
 * is within a small factor of G's smallest eigenvalue, so a last pivot above {@link
 * #PIVOT_FLOOR} of the first bounds the condition number where the eigen root would keep every
 * direction too; below it the eigen root is used, which drops directions under {@link
 * FactoredSvd#RELATIVE_EIGENVALUE_FLOOR} (rank-deficient stacks such as one adapter merged twice).
 */
final class CholeskyRoot implements GramRoot {
  /** The smallest pivot, as a fraction of the largest, that the Cholesky root is used with. */
  static final double PIVOT_FLOOR = 1e-8;

  /** L in its lower triangle, row-major n×n. */
  private final double[] lower;
  /** Row i of L·Lᵀ is row {@code permutation[i]} of G. */
  private final int[] permutation;
  private final int n;

  private CholeskyRoot(double[] lower, int[] permutation) {
    this.lower = lower;
    this.permutation = permutation;
    this.n = permutation.length;
  }

  /** The root, or null when G is not positive definite beyond {@link #PIVOT_FLOOR}. */
  static CholeskyRoot of(DMatrixRMaj gram) {
    int n = gram.numRows;
    double[] a = gram.data.clone();
    int[] permutation = new int[n];
    for (int i = 0; i < n; i++) {
      permutation[i] = i;
    }
    double first = 0;
    for (int j = 0; j < n; j++) {
      int pivot = j;
      for (int i = j + 1; i < n; i++) {
        if (a[i * n + i] > a[pivot * n + pivot]) {
          pivot = i;
        }
      }
      if (pivot != j) {
        swap(a, n, j, pivot);
        int index = permutation[j];
        permutation[j] = permutation[pivot];
        permutation[pivot] = index;
      }
      double diagonal = a[j * n + j];
      if (j == 0) {
        first = diagonal;
      }
      if (!(diagonal > PIVOT_FLOOR * first)) {
        return null;
      }
      double root = Math.sqrt(diagonal);
      a[j * n + j] = root;
      for (int i = j + 1; i < n; i++) {
        a[i * n + j] /= root;
      }
      // The trailing Schur complement, lower triangle only: what is above the diagonal is stale.
      for (int i = j + 1; i < n; i++) {
        double factor = a[i * n + j];
        for (int k = j + 1; k <= i; k++) {
          a[i * n + k] -= factor * a[k * n + j];
        }
      }
    }
    for (int i = 0; i < n; i++) {
      for (int k = i + 1; k < n; k++) {
        a[i * n + k] = 0;
      }
    }
    return new CholeskyRoot(a, permutation);
  }

  /** Swaps rows and columns {@code j} < {@code p} of the lower triangle of a symmetric matrix. */
  private static void swap(double[] a, int n, int j, int p) {
    for (int k = 0; k < j; k++) {
      double t = a[j * n + k];
      a[j * n + k] = a[p * n + k];
      a[p * n + k] = t;
    }
    double diagonal = a[j * n + j];
    a[j * n + j] = a[p * n + p];
    a[p * n + p] = diagonal;
    for (int i = j + 1; i < p; i++) {
      double t = a[i * n + j];
      a[i * n + j] = a[p * n + i];
      a[p * n + i] = t;
    }
    for (int i = p + 1; i < n; i++) {
      double t = a[i * n + j];
      a[i * n + j] = a[i * n + p];
      a[i * n + p] = t;
    }
  }

  @Override
  public DMatrixRMaj root() {
    // Column permutation[k] of R = Lᵀ·Π is column k of Lᵀ, that is row k of L.
    DMatrixRMaj root = new DMatrixRMaj(n, n);
    for (int k = 0; k < n; k++) {
      for (int i = 0; i <= k; i++) {
        root.set(i, permutation[k], lower[k * n + i]);
      }
    }
    return root;
  }

  @Override
  public DMatrixRMaj solve(DMatrixRMaj rhs) {
    // R⁻¹ = Πᵀ·L⁻ᵀ: back substitution with Lᵀ, then row i of the result goes to row permutation[i].
    int columns = rhs.numCols;
    double[] y = rhs.data.clone();
    for (int i = n - 1; i >= 0; i--) {
      for (int k = i + 1; k < n; k++) {
        double factor = lower[k * n + i];
        for (int c = 0; c < columns; c++) {
          y[i * columns + c] -= factor * y[k * columns + c];
        }
      }
      double diagonal = lower[i * n + i];
      for (int c = 0; c < columns; c++) {
        y[i * columns + c] /= diagonal;
      }
    }
    DMatrixRMaj result = new DMatrixRMaj(n, columns);
    for (int i = 0; i < n; i++) {
      System.arraycopy(y, i * columns, result.data, permutation[i] * columns, columns);
    }
    return result;
  }
}

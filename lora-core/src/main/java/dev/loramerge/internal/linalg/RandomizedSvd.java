package dev.loramerge.internal.linalg;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.ToIntFunction;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;

/**
 * Rank-k factors of a dense m×n update D, by a randomized range finder (Halko, Martinsson and
 * Tropp 2011, algorithms 4.4 and 5.1) or, when asked, by an exact dense SVD.
 *
 * <p>Randomized: Y = D·Ω with a Gaussian Ω of k + {@link #OVERSAMPLING} columns, {@link
 * #POWER_ITERATIONS} power iterations (Y re-orthonormalized each time), Q = orth(Y), then the exact
 * truncation of Q·(QᵀD) by {@link FactoredSvd}. The result's error ‖D − B'A'‖ exceeds the
 * optimal ‖D − D_k‖ by a factor that shrinks with the spectrum's decay; with these settings it
 * is within 1 % on the merged LoRA deltas the tests measure. The matrix products run in DJL
 * (float32 for D, float64 for the thin factors); the small decompositions in EJML.
 */
public final class RandomizedSvd {
  /** Extra sketch columns beyond the target rank. */
  public static final int OVERSAMPLING = 10;
  /** Power iterations; each sharpens the decay of the sketched spectrum. */
  public static final int POWER_ITERATIONS = 2;

  /** Below this many multiply-adds (m·n·min(m, n)) an exact SVD costs less than a few milliseconds. */
  static final long EXACT_WORK_LIMIT = 50_000_000L;

  private RandomizedSvd() {}

  /** Whether an exact SVD of an m×n matrix is cheap enough to use instead of the randomized one. */
  public static boolean exactIsCheap(long rows, long cols) {
    return rows * cols * Math.min(rows, cols) <= EXACT_WORK_LIMIT;
  }

  /**
   * Returns {B' (m×k), A' (k×n)} in float64, owned by {@code manager}, with B'·A' ≈ D.
   *
   * @param rank the rank the sketch is sized for
   * @param rankOf the kept rank k from the sketch's singular values (at most {@code rank})
   * @param sketches the Gaussian test matrices
   */
  public static NDArray[] truncate(
      NDManager manager, NDArray dense, int rank, ToIntFunction<double[]> rankOf, Sketches sketches) {
    long rows = dense.getShape().get(0);
    long cols = dense.getShape().get(1);
    int width = (int) Math.min(rank + OVERSAMPLING, Math.min(rows, cols));
    NDArray d32 = dense.getDataType() == DataType.FLOAT32 ? dense : dense.toType(DataType.FLOAT32, false);
    NDArray sketch = d32.matMul(manager.create(sketches.omega(cols, width), new Shape(cols, width)));
    NDArray basis = orthonormal(manager, sketch);
    for (int i = 0; i < POWER_ITERATIONS; i++) {
      // Dᵀ·Q is not re-orthonormalized: Q is, so its condition is at most σ₁/σ_w of D, and the
      // next product's is its square, which float32 and the float64 orthonormalization after it
      // carry (on the merged SDXL deltas the truncation error moved by under 1e-10 of itself).
      // That saves two of the five orthonormalizations, about a tenth of a 1280×1280 module.
      NDArray back = d32.transpose().matMul(basis.toType(DataType.FLOAT32, false));
      basis = orthonormal(manager, d32.matMul(back));
    }
    NDArray projected = basis.transpose().toType(DataType.FLOAT32, false).matMul(d32).toType(DataType.FLOAT64, false);
    FactoredSvd svd =
        FactoredSvd.of(
            NdArrays.toMatrix(basis.transpose().matMul(basis)),
            NdArrays.toMatrix(projected.matMul(projected.transpose())),
            rankOf);
    return new NDArray[] {
      basis.matMul(NdArrays.fromMatrix(manager, svd.left())),
      NdArrays.fromMatrix(manager, svd.right()).matMul(projected)
    };
  }

  /**
   * Returns {B' (m×k), A' (k×n)} from an exact float64 SVD of D (O(m·n·min(m, n)); for checks
   * and small modules).
   */
  public static NDArray[] exact(NDManager manager, NDArray dense, ToIntFunction<double[]> rankOf) {
    DMatrixRMaj matrix = NdArrays.toMatrix(dense);
    SingularValueDecomposition_F64<DMatrixRMaj> svd =
        DecompositionFactory_DDRM.svd(matrix.numRows, matrix.numCols, true, true, true);
    if (!svd.decompose(matrix)) {
      throw new ArithmeticException("dense SVD did not converge");
    }
    DMatrixRMaj u = svd.getU(null, false);
    DMatrixRMaj w = svd.getW(null);
    DMatrixRMaj v = svd.getV(null, true);
    SingularOps_DDRM.descendingOrder(u, false, w, v, true);
    int size = Math.min(matrix.numRows, matrix.numCols);
    double[] sigma = new double[size];
    for (int i = 0; i < size; i++) {
      sigma[i] = w.get(i, i);
    }
    int k = Math.max(1, Math.min(rankOf.applyAsInt(sigma), size));
    DMatrixRMaj up = CommonOps_DDRM.extract(u, 0, u.numRows, 0, k);
    for (int col = 0; col < k; col++) {
      for (int row = 0; row < up.numRows; row++) {
        up.set(row, col, up.get(row, col) * sigma[col]);
      }
    }
    DMatrixRMaj down = CommonOps_DDRM.extract(v, 0, k, 0, v.numCols);
    return new NDArray[] {NdArrays.fromMatrix(manager, up), NdArrays.fromMatrix(manager, down)};
  }

  /**
   * The Gaussian test matrices Ω, one per shape (columns × width), each drawn once from its own
   * stream of a seed: drawing one costs more than a 1280×1280 module's orthonormalizations, and
   * the draw being a function of the shape alone keeps results independent of module order and
   * threads. Thread-safe; holds one matrix per shape asked for.
   */
  public static final class Sketches {
    private final long seed;
    private final ConcurrentHashMap<List<Long>, float[]> byShape = new ConcurrentHashMap<>();

    /** Test matrices drawn from streams of {@code seed}. */
    public Sketches(long seed) {
      this.seed = seed;
    }

    /** Ω (columns × width, row-major), shared: not to be changed. */
    float[] omega(long columns, int width) {
      return byShape.computeIfAbsent(
          List.of(columns, (long) width),
          shape -> {
            SplittableRandom random = new SplittableRandom(Randoms.streamSeed(seed, columns + "x" + width, -1, "sketch"));
            float[] omega = new float[Math.toIntExact(columns * width)];
            for (int i = 0; i < omega.length; i++) {
              omega[i] = (float) Randoms.standardNormal(random);
            }
            return omega;
          });
    }
  }

  /** Q with orthonormal columns spanning Y's (float64), by Y·V·Λ^-½ from YᵀY = VΛVᵀ. */
  private static NDArray orthonormal(NDManager manager, NDArray y) {
    NDArray y64 = y.toType(DataType.FLOAT64, false);
    DMatrixRMaj gram = NdArrays.toMatrix(y64.transpose().matMul(y64));
    return y64.matMul(NdArrays.fromMatrix(manager, FactoredSvd.whitening(gram)));
  }
}

package dev.loramerge.internal.linalg;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.internal.fuse.OrderedKernels;
import dev.loramerge.internal.numeric.FloatFormats;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.BiFunction;
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
 * #POWER_ITERATIONS} power iterations (Y re-orthonormalized each time, by Cholesky-QR), Q =
 * orth(Y), then the exact truncation of Q·(QᵀD) by {@link FactoredSvd}. The result's error
 * ‖D − B'A'‖ exceeds the optimal ‖D − D_k‖ by a factor that shrinks with the spectrum's decay;
 * with these settings it is within 1 % on the merged LoRA deltas the tests measure. On the host
 * every product is an {@link OrderedProducts} one (each entry's bits defined by its inputs); on a
 * device they are DJL's, batched over a run of same-shape matrices; the small decompositions are
 * EJML's on the host either way.
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
   * Returns {B' (m×k), A' (k×n)} in float64, owned by {@code manager}, with B'·A' ≈ D: on the
   * host by {@link #truncate(float[], int, int, int, ToIntFunction, Sketches)} where D is on the
   * CPU and the {@linkplain OrderedProducts#vectorized ordered products are fast}, by {@link
   * #truncateBatch(NDArray, int, ToIntFunction, Sketches)} of one matrix on its device otherwise.
   *
   * @param rank the rank the sketch is sized for
   * @param rankOf the kept rank k from the sketch's singular values (at most {@code rank})
   * @param sketches the Gaussian test matrices
   */
  public static NDArray[] truncate(
      NDManager manager, NDArray dense, int rank, ToIntFunction<double[]> rankOf, Sketches sketches) {
    int rows = Math.toIntExact(dense.getShape().get(0));
    int cols = Math.toIntExact(dense.getShape().get(1));
    double[][] factors;
    if (dense.getDevice().getDeviceType().equals(Device.Type.CPU) && OrderedProducts.vectorized()) {
      factors = truncate(NdArrays.floatValues(dense), rows, cols, rank, rankOf, sketches);
    } else {
      try (NDManager scope = manager.newSubManager()) {
        // A copy in the scope, so that neither it nor its reshaped view outlives the call.
        NDArray d32 = dense.toType(DataType.FLOAT32, true);
        d32.attach(scope);
        factors = truncateBatch(d32.reshape(1, rows, cols), rank, rankOf, sketches)[0];
      }
    }
    int k = factors[0].length / rows;
    return new NDArray[] {manager.create(factors[0], new Shape(rows, k)), manager.create(factors[1], new Shape(k, cols))};
  }

  /**
   * The algorithm of {@link #truncateBatch(NDArray, int, ToIntFunction, Sketches)} for one m×n
   * float32 matrix on the host (row-major {@code dense}), every product by {@link
   * OrderedProducts}, so that each of its entries is defined bit for bit.
   *
   * @return {B' (m×k), A' (k×n)} in float64, row-major
   */
  public static double[][] truncate(
      float[] dense, int rows, int cols, int rank, ToIntFunction<double[]> rankOf, Sketches sketches) {
    int width = Math.min(rank + OVERSAMPLING, Math.min(rows, cols));
    double[] basis = orthonormal(OrderedProducts.times(dense, rows, cols, sketches.omega(cols, width), width), rows, width);
    for (int i = 0; i < POWER_ITERATIONS; i++) {
      float[] back = OrderedProducts.transposeTimes(dense, rows, cols, FloatFormats.rounded(basis), width);
      basis = orthonormal(OrderedProducts.times(dense, rows, cols, back, width), rows, width);
    }
    // Qᵀ·D, made as its transpose Dᵀ·Q (the same chains: a fused multiply-add's factors commute).
    double[] projectedByColumns = FloatFormats.widened(OrderedProducts.transposeTimes(dense, rows, cols, FloatFormats.rounded(basis), width));
    FactoredSvd svd =
        FactoredSvd.of(
            DMatrixRMaj.wrap(width, width, OrderedProducts.transposeTimes(basis, rows, width, basis, width)),
            DMatrixRMaj.wrap(width, width, OrderedProducts.transposeTimes(projectedByColumns, cols, width, projectedByColumns, width)),
            rankOf);
    int k = svd.rank();
    double[] projected = new double[width * cols];
    for (int col = 0; col < cols; col++) {
      for (int c = 0; c < width; c++) {
        projected[c * cols + col] = projectedByColumns[col * width + c];
      }
    }
    return new double[][] {
      OrderedProducts.times(basis, rows, width, svd.left().data, k),
      OrderedProducts.times(svd.right().data, k, width, projected, cols)
    };
  }

  /** Q = Y·R⁻¹ from YᵀY = RᵀR, as {@link #orthonormalBatch} forms it, for one m×w float32 Y. */
  private static double[] orthonormal(float[] y, int rows, int width) {
    double[] wide = FloatFormats.widened(y);
    double[] gram = OrderedProducts.transposeTimes(wide, rows, width, wide, width);
    double[] inverse = GramRoot.of(DMatrixRMaj.wrap(width, width, gram)).solve(CommonOps_DDRM.identity(width)).data;
    return OrderedProducts.times(wide, rows, width, inverse, width);
  }

  /**
   * {@link #truncate} of {@code count} m×n matrices at once, stacked row-major as float32 in
   * {@code dense}: each product is one batched call and each step's small matrices come back to
   * the host in one copy, so a device does a batch in the calls and waits of one matrix (on a GPU
   * each call costs tens of microseconds of launch and JNI, each copy back a wait for the device).
   * Orthonormalization is Cholesky-QR, Q = Y·R⁻¹ from YᵀY = RᵀR on the host (the eigen root's
   * pseudo-inverse where the Gram is ill-conditioned, {@link GramRoot#of}), and the core's Gram
   * matrices come back together. The results equal {@link #truncate}'s up to rounding; which
   * matrices share a batch changes their last bits, so callers batch by a rule, not by timing.
   *
   * @param rank the rank the sketch is sized for
   * @param rankOf the kept rank k from each matrix's sketch singular values (at most {@code rank})
   * @return per matrix, {B' (m×k), A' (k×n)} in float64, row-major
   */
  public static double[][][] truncateBatch(
      NDManager manager, ByteBuffer dense, int count, int rows, int cols, int rank, ToIntFunction<double[]> rankOf,
      Sketches sketches) {
    try (NDManager scope = manager.newSubManager()) {
      return truncateBatch(scope.create(dense, new Shape(count, rows, cols), DataType.FLOAT32), rank, rankOf, sketches);
    }
  }

  /**
   * {@link #truncateBatch(NDManager, ByteBuffer, int, int, int, int, ToIntFunction, Sketches)} of
   * the count×m×n float32 matrices {@code d} holds, where they are (made on a device).
   */
  public static double[][][] truncateBatch(NDArray d, int rank, ToIntFunction<double[]> rankOf, Sketches sketches) {
    return truncateBatch(d, rank, rankOf, sketches, BatchProducts::on);
  }

  /** {@link #truncateBatch(NDArray, int, ToIntFunction, Sketches)} with the products {@code productsOn} gives for its scope and count. */
  static double[][][] truncateBatch(
      NDArray d, int rank, ToIntFunction<double[]> rankOf, Sketches sketches, BiFunction<NDManager, Integer, BatchProducts> productsOn) {
    int count = Math.toIntExact(d.getShape().get(0));
    int rows = Math.toIntExact(d.getShape().get(1));
    int cols = Math.toIntExact(d.getShape().get(2));
    int width = Math.min(rank + OVERSAMPLING, Math.min(rows, cols));
    try (NDManager scope = d.getManager().newSubManager()) {
      // Every array the products make belongs to the scope, and the updates go back to their owner.
      d.tempAttach(scope);
      BatchProducts products = productsOn.apply(scope, count);
      NDArray omega = scope.create(sketches.omega(cols, width), new Shape(cols, width));
      NDArray basis = orthonormalBatch(scope, products, products.times(d, omega), count, width);
      for (int i = 0; i < POWER_ITERATIONS; i++) {
        NDArray back = products.transposeTimes(d, basis.toType(DataType.FLOAT32, false));
        basis = orthonormalBatch(scope, products, products.times(d, back), count, width);
      }
      // As on the host: Qᵀ·D made as its transpose Dᵀ·Q (count×n×w), whose Gram is the core's.
      NDArray projectedByColumns = products.transposeTimes(d, basis.toType(DataType.FLOAT32, false)).toType(DataType.FLOAT64, false);
      double[] grams =
          NDArrays.stack(new NDList(products.transposeTimes(basis, basis), products.transposeTimes(projectedByColumns, projectedByColumns)))
              .toDoubleArray();
      int square = width * width;
      FactoredSvd[] svds = new FactoredSvd[count];
      int most = 1;
      for (int b = 0; b < count; b++) {
        svds[b] =
            FactoredSvd.of(
                DMatrixRMaj.wrap(width, width, Arrays.copyOfRange(grams, b * square, (b + 1) * square)),
                DMatrixRMaj.wrap(width, width, Arrays.copyOfRange(grams, (count + b) * square, (count + b + 1) * square)),
                rankOf);
        most = Math.max(most, svds[b].rank());
      }
      // L (w×k) and Pᵀ (w×k) of every matrix, zero-padded to the batch's largest kept rank: the
      // down factor P·(Qᵀ·D) is made as its transpose (Dᵀ·Q)·Pᵀ, the same chains over w.
      double[] lefts = new double[count * width * most];
      double[] rightsByColumns = new double[count * width * most];
      for (int b = 0; b < count; b++) {
        DMatrixRMaj left = svds[b].left();
        DMatrixRMaj right = svds[b].right();
        for (int row = 0; row < width; row++) {
          System.arraycopy(left.data, row * left.numCols, lefts, (b * width + row) * most, left.numCols);
          for (int k = 0; k < right.numRows; k++) {
            rightsByColumns[(b * width + row) * most + k] = right.get(k, row);
          }
        }
      }
      NDArray ups = products.times(basis, scope.create(lefts, new Shape(count, width, most)));
      NDArray downsByColumns = products.times(projectedByColumns, scope.create(rightsByColumns, new Shape(count, width, most)));
      double[] values = NDArrays.concat(new NDList(ups.flatten(), downsByColumns.flatten())).toDoubleArray();
      double[][][] factors = new double[count][][];
      long upsSize = (long) count * rows * most;
      for (int b = 0; b < count; b++) {
        int k = svds[b].rank();
        double[] up = new double[rows * k];
        for (int row = 0; row < rows; row++) {
          System.arraycopy(values, (b * rows + row) * most, up, row * k, k);
        }
        double[] down = new double[k * cols];
        for (int col = 0; col < cols; col++) {
          int from = Math.toIntExact(upsSize + ((long) b * cols + col) * most);
          for (int r = 0; r < k; r++) {
            down[r * cols + col] = values[from + r];
          }
        }
        factors[b] = new double[][] {up, down};
      }
      return factors;
    }
  }

  /**
   * The batched products of {@link #truncateBatch}: by the CUDA kernels with {@link
   * OrderedProducts}' bits where they run on the device, by libtorch's {@code matMul} otherwise.
   * A two-dimensional operand is shared by the batch.
   */
  interface BatchProducts {
    /** A·B per matrix. */
    NDArray times(NDArray a, NDArray b);

    /** Aᵀ·B per matrix. */
    NDArray transposeTimes(NDArray a, NDArray b);

    static BatchProducts on(NDManager scope, int count) {
      if (OrderedKernels.available(scope.getDevice())) {
        return new BatchProducts() {
          @Override
          public NDArray times(NDArray a, NDArray b) {
            return OrderedKernels.times(scope, a, b, count);
          }

          @Override
          public NDArray transposeTimes(NDArray a, NDArray b) {
            return OrderedKernels.transposeTimes(scope, a, b, count);
          }
        };
      }
      return new BatchProducts() {
        @Override
        public NDArray times(NDArray a, NDArray b) {
          return a.matMul(b);
        }

        @Override
        public NDArray transposeTimes(NDArray a, NDArray b) {
          return a.transpose(0, 2, 1).matMul(b);
        }
      };
    }
  }

  /**
   * Returns {B' (m×k), A' (k×n)} from an exact float64 SVD of D (O(m·n·min(m, n)); for checks
   * and small modules).
   */
  public static NDArray[] exact(NDManager manager, NDArray dense, ToIntFunction<double[]> rankOf) {
    DMatrixRMaj[] factors = exact(NdArrays.toMatrix(dense), rankOf);
    return new NDArray[] {NdArrays.fromMatrix(manager, factors[0]), NdArrays.fromMatrix(manager, factors[1])};
  }

  /** {@link #exact(NDManager, NDArray, ToIntFunction)} of the m×n float32 {@code dense} on the host, row-major in float64. */
  public static double[][] exact(float[] dense, int rows, int cols, ToIntFunction<double[]> rankOf) {
    DMatrixRMaj[] factors = exact(DMatrixRMaj.wrap(rows, cols, FloatFormats.widened(dense)), rankOf);
    return new double[][] {factors[0].data, factors[1].data};
  }

  private static DMatrixRMaj[] exact(DMatrixRMaj matrix, ToIntFunction<double[]> rankOf) {
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
    return new DMatrixRMaj[] {up, down};
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

  /**
   * Q = Y·R⁻¹ for each of a batch's Y (count×m×w), R from YᵀY = RᵀR on the host: orthonormal
   * columns spanning Y's, a zero column for each direction the eigen root drops.
   */
  private static NDArray orthonormalBatch(NDManager manager, BatchProducts products, NDArray y, int count, int width) {
    NDArray y64 = y.toType(DataType.FLOAT64, false);
    double[] grams = products.transposeTimes(y64, y64).toDoubleArray();
    int square = width * width;
    double[] inverses = new double[grams.length];
    DMatrixRMaj identity = CommonOps_DDRM.identity(width);
    for (int b = 0; b < count; b++) {
      DMatrixRMaj gram = DMatrixRMaj.wrap(width, width, Arrays.copyOfRange(grams, b * square, (b + 1) * square));
      System.arraycopy(GramRoot.of(gram).solve(identity).data, 0, inverses, b * square, square);
    }
    return products.times(y64, manager.create(inverses, new Shape(count, width, width)));
  }

}

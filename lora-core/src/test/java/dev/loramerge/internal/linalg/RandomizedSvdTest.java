package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The randomized truncation against the optimal one (an exact SVD), on a matrix shaped like a
 * pruned merge: a low-rank signal plus a flat tail, the hard case for a range finder.
 */
class RandomizedSvdTest {
  private static float[] matrix(int rows, int cols, long seed) {
    Random random = new Random(seed);
    int signalRank = 24;
    double[][] left = new double[rows][signalRank];
    double[][] right = new double[signalRank][cols];
    for (double[] row : left) {
      for (int j = 0; j < signalRank; j++) {
        row[j] = random.nextGaussian();
      }
    }
    for (double[] row : right) {
      for (int j = 0; j < cols; j++) {
        row[j] = random.nextGaussian();
      }
    }
    float[] values = new float[rows * cols];
    for (int i = 0; i < rows; i++) {
      for (int j = 0; j < cols; j++) {
        double sum = 0;
        for (int p = 0; p < signalRank; p++) {
          sum += left[i][p] * right[p][j] * Math.pow(0.85, p);
        }
        values[i * cols + j] = (float) (sum + 0.3 * random.nextGaussian());
      }
    }
    return values;
  }

  private static double residual(NDArray dense, NDArray[] factors) {
    NDArray approximation = factors[0].matMul(factors[1]);
    return dense.toType(DataType.FLOAT64, false).sub(approximation).norm().getDouble();
  }

  @Test
  void isWithinOnePercentOfTheOptimalTruncation() {
    try (NDManager manager = NDManager.newBaseManager()) {
      NDArray dense = manager.create(matrix(300, 400, 1), new Shape(300, 400));
      for (int rank : new int[] {8, 16, 32}) {
        double optimal = residual(dense, RandomizedSvd.exact(manager, dense, sigma -> rank));
        double randomized = residual(dense, RandomizedSvd.truncate(manager, dense, rank, sigma -> rank, new RandomizedSvd.Sketches(7)));
        assertThat(randomized / optimal - 1)
            .as("excess error of the randomized truncation at rank %d (optimal residual %s)", rank, optimal)
            .isBetween(-1e-9, 0.01);
      }
    }
  }

  /** {@code matrices} stacked in a native-order direct buffer, as a device merge hands them over. */
  /** A product of Gaussian factors of rank {@code rank}, with no tail. */
  private static float[] lowRank(int rows, int cols, int rank, long seed) {
    Random random = new Random(seed);
    double[] left = new double[rows * rank];
    double[] right = new double[rank * cols];
    for (int i = 0; i < left.length; i++) {
      left[i] = random.nextGaussian();
    }
    for (int i = 0; i < right.length; i++) {
      right[i] = random.nextGaussian();
    }
    float[] values = new float[rows * cols];
    for (int i = 0; i < rows; i++) {
      for (int j = 0; j < cols; j++) {
        double sum = 0;
        for (int k = 0; k < rank; k++) {
          sum += left[i * rank + k] * right[k * cols + j];
        }
        values[i * cols + j] = (float) sum;
      }
    }
    return values;
  }

  private static ByteBuffer stacked(float[]... matrices) {
    ByteBuffer buffer = ByteBuffer.allocateDirect(matrices.length * matrices[0].length * Float.BYTES).order(ByteOrder.nativeOrder());
    for (float[] matrix : matrices) {
      buffer.asFloatBuffer().position(0);
      for (float value : matrix) {
        buffer.putFloat(value);
      }
    }
    return buffer.flip();
  }

  private static double residual(float[] dense, double[][] factors, int rows, int cols) {
    int rank = factors[0].length / rows;
    double sum = 0;
    for (int i = 0; i < rows; i++) {
      for (int j = 0; j < cols; j++) {
        double product = 0;
        for (int k = 0; k < rank; k++) {
          product += factors[0][i * rank + k] * factors[1][k * cols + j];
        }
        double difference = dense[i * cols + j] - product;
        sum += difference * difference;
      }
    }
    return Math.sqrt(sum);
  }

  @Test
  void aBatchIsAsCloseToTheOptimalTruncationAsOneMatrix() {
    float[][] matrices = {matrix(300, 400, 1), matrix(300, 400, 5), new float[300 * 400]};
    // The third: rank 2 and noise 1e-5 of it, whose sketch Gram is too ill-conditioned for the
    // Cholesky root (pivots below 1e-8 of the first): the eigen root's path of the orthonormalization.
    Random random = new Random(9);
    for (int i = 0; i < 300; i++) {
      for (int j = 0; j < 400; j++) {
        matrices[2][i * 400 + j] = (float) ((i % 7) * Math.sin(j) + (i % 3) * Math.cos(0.5 * j) + 1e-5 * random.nextGaussian());
      }
    }
    try (NDManager manager = NDManager.newBaseManager()) {
      for (int rank : new int[] {8, 32}) {
        int before = manager.getManagedArrays().size();
        double[][][] batch =
            RandomizedSvd.truncateBatch(manager, stacked(matrices), 3, 300, 400, rank, sigma -> rank, new RandomizedSvd.Sketches(7));
        assertThat(manager.getManagedArrays()).as("arrays the batch left in the caller's manager").hasSize(before);
        for (int b = 0; b < 3; b++) {
          NDArray dense = manager.create(matrices[b], new Shape(300, 400));
          double optimal = residual(dense, RandomizedSvd.exact(manager, dense, sigma -> rank));
          double batched = residual(matrices[b], batch[b], 300, 400);
          double norm = dense.toType(DataType.FLOAT64, false).norm().getDouble();
          assertThat(batched - optimal)
              .as("excess error of matrix %d of the batch at rank %d (optimal residual %s)", b, rank, optimal)
              .isBetween(-1e-9 * norm, 0.01 * optimal + 1e-6 * norm);
        }
      }
    }
  }

  @Test
  void aBatchIsReproducibleForASeed() {
    float[][] matrices = {matrix(120, 90, 2), matrix(120, 90, 3)};
    try (NDManager manager = NDManager.newBaseManager()) {
      double[][][] first = RandomizedSvd.truncateBatch(manager, stacked(matrices), 2, 120, 90, 6, sigma -> 6, new RandomizedSvd.Sketches(3));
      double[][][] second = RandomizedSvd.truncateBatch(manager, stacked(matrices), 2, 120, 90, 6, sigma -> 6, new RandomizedSvd.Sketches(3));
      for (int b = 0; b < 2; b++) {
        assertThat(second[b][0]).as("up of matrix %d", b).containsExactly(first[b][0]);
        assertThat(second[b][1]).as("down of matrix %d", b).containsExactly(first[b][1]);
      }
    }
  }

  /**
   * The batch's algorithm is the host's, step for step: with products whose entries are chained as
   * {@link OrderedProducts} chains them (what the CUDA kernels do on a GPU), a batch gives every
   * matrix the bytes {@link RandomizedSvd#truncate(float[], int, int, int, java.util.function.ToIntFunction,
   * RandomizedSvd.Sketches)} gives it alone, kept ranks differing within the batch included.
   */
  @Test
  void aBatchWithOrderedProductsGivesTheHostsBytes() {
    float[][] matrices = {matrix(120, 90, 2), matrix(120, 90, 3), lowRank(120, 90, 3, 4)};
    java.util.function.ToIntFunction<double[]> rankOf = sigma -> {
      int kept = 0;
      while (kept < sigma.length && sigma[kept] > 1e-3 * sigma[0]) {
        kept++;
      }
      return Math.min(kept, 6);
    };
    try (NDManager manager = NDManager.newBaseManager()) {
      NDArray stacked = manager.create(stacked(matrices), new Shape(3, 120, 90), DataType.FLOAT32);
      double[][][] batch = RandomizedSvd.truncateBatch(stacked, 6, rankOf, new RandomizedSvd.Sketches(3), OrderedOnHost::new);
      for (int b = 0; b < matrices.length; b++) {
        double[][] alone = RandomizedSvd.truncate(matrices[b], 120, 90, 6, rankOf, new RandomizedSvd.Sketches(3));
        assertThat(batch[b][0]).as("up of matrix %d (rank %d)", b, alone[0].length / 120).containsExactly(alone[0]);
        assertThat(batch[b][1]).as("down of matrix %d", b).containsExactly(alone[1]);
      }
      assertThat(batch[2][0].length / 120).as("the low-rank matrix's kept rank").isLessThan(batch[0][0].length / 120);
    }
  }

  /** {@link RandomizedSvd.BatchProducts} by {@link OrderedProducts}, matrix by matrix, on the host. */
  private record OrderedOnHost(NDManager scope, int count) implements RandomizedSvd.BatchProducts {
    @Override
    public NDArray times(NDArray a, NDArray b) {
      return apply(a, b, false);
    }

    @Override
    public NDArray transposeTimes(NDArray a, NDArray b) {
      return apply(a, b, true);
    }

    private NDArray apply(NDArray a, NDArray b, boolean transposeA) {
      long[] as = a.getShape().getShape();
      long[] bs = b.getShape().getShape();
      int aRows = (int) as[as.length - 2];
      int aCols = (int) as[as.length - 1];
      int bCols = (int) bs[bs.length - 1];
      int outRows = transposeA ? aCols : aRows;
      boolean doubles = a.getDataType() == DataType.FLOAT64;
      double[] out = new double[count * outRows * bCols];
      for (int m = 0; m < count; m++) {
        NDArray am = as.length == 2 ? a : a.get(m);
        NDArray bm = bs.length == 2 ? b : b.get(m);
        double[] product;
        if (doubles) {
          product = transposeA
              ? OrderedProducts.transposeTimes(am.toDoubleArray(), aRows, aCols, bm.toDoubleArray(), bCols)
              : OrderedProducts.times(am.toDoubleArray(), aRows, aCols, bm.toDoubleArray(), bCols);
        } else {
          float[] floats = transposeA
              ? OrderedProducts.transposeTimes(am.toFloatArray(), aRows, aCols, bm.toFloatArray(), bCols)
              : OrderedProducts.times(am.toFloatArray(), aRows, aCols, bm.toFloatArray(), bCols);
          product = new double[floats.length];
          for (int i = 0; i < floats.length; i++) {
            product[i] = floats[i];
          }
        }
        System.arraycopy(product, 0, out, m * outRows * bCols, product.length);
      }
      NDArray result = scope.create(out, new Shape(count, outRows, bCols));
      return doubles ? result : result.toType(DataType.FLOAT32, false);
    }
  }

  @Test
  void isReproducibleForASeed() {
    try (NDManager manager = NDManager.newBaseManager()) {
      NDArray dense = manager.create(matrix(120, 90, 2), new Shape(120, 90));
      NDArray[] first = RandomizedSvd.truncate(manager, dense, 6, sigma -> 6, new RandomizedSvd.Sketches(3));
      NDArray[] second = RandomizedSvd.truncate(manager, dense, 6, sigma -> 6, new RandomizedSvd.Sketches(3));
      assertThat(first[0].toDoubleArray()).containsExactly(second[0].toDoubleArray());
      assertThat(first[1].toDoubleArray()).containsExactly(second[1].toDoubleArray());
    }
  }

  @Test
  void aSketchDependsOnItsShapeAndSeedAloneNotOnWhatWasDrawnBefore() {
    RandomizedSvd.Sketches fresh = new RandomizedSvd.Sketches(4);
    RandomizedSvd.Sketches used = new RandomizedSvd.Sketches(4);
    used.omega(300, 18);
    used.omega(400, 42);
    float[] drawnFirst = fresh.omega(90, 16);
    assertThat(used.omega(90, 16)).as("Ω of 90×16 after other shapes").containsExactly(drawnFirst);
    assertThat(new RandomizedSvd.Sketches(5).omega(90, 16)).as("Ω of another seed").isNotEqualTo(drawnFirst);
    double sumOfSquares = 0;
    for (float value : drawnFirst) {
      sumOfSquares += value * value;
    }
    assertThat(sumOfSquares / drawnFirst.length).as("variance of Ω's entries (standard normal)").isBetween(0.8, 1.2);
  }
}

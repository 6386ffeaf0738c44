package dev.loramerge.internal.linalg;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
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

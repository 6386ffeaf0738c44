package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.TensorData;
import dev.loramerge.merge.spi.ModuleUpdate;

/**
 * Merged factors with scale 1: NDArrays (a dense update re-ranked), an algorithm's float32 or
 * float64 values, the float64 values of the factored SVD, or an algorithm's tensors, already in
 * the output type. Values are rounded to the output type in Java, with no native call.
 */
record Merged(
    NDArray up, NDArray down, float[] upValues, float[] downValues, double[] upDoubles, double[] downDoubles, int valuesRank,
    TensorData[] tensors) {
  static Merged of(NDArray[] factors) {
    return new Merged(factors[0], factors[1], null, null, null, null, 0, null);
  }

  static Merged ofFloats(float[] up, float[] down, int rank) {
    return new Merged(null, null, up, down, null, null, rank, null);
  }

  static Merged ofDoubles(ModuleUpdate.DoubleFactors factors) {
    return new Merged(null, null, null, null, factors.up(), factors.down(), factors.rank(), null);
  }

  /** Re-ranked factors {up ({@code rows}×k), down (k×n)}, row-major. */
  static Merged ofDoubles(double[][] factors, int rows) {
    return new Merged(null, null, null, null, factors[0], factors[1], factors[0].length / rows, null);
  }

  /** Factors {up (m×r), down (r×n)} already in the output type. */
  static Merged ofTensors(TensorData[] factors) {
    return new Merged(null, null, null, null, null, null, Math.toIntExact(factors[0].dim(1)), factors);
  }

  int rank() {
    return up != null ? Math.toIntExact(up.getShape().get(1)) : valuesRank;
  }

  /** The factors as arrays, made in {@code manager} from values where needed. */
  NDArray[] arrays(NDManager manager) {
    if (up != null) {
      return new NDArray[] {up, down};
    }
    if (upDoubles != null) {
      return new NDArray[] {
        manager.create(upDoubles, new Shape(upDoubles.length / valuesRank, valuesRank)),
        manager.create(downDoubles, new Shape(valuesRank, downDoubles.length / valuesRank))
      };
    }
    return new NDArray[] {
      manager.create(upValues, new Shape(upValues.length / valuesRank, valuesRank)),
      manager.create(downValues, new Shape(valuesRank, downValues.length / valuesRank))
    };
  }
}

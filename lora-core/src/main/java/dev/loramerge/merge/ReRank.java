package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import dev.loramerge.internal.linalg.FactoredSvd;
import dev.loramerge.internal.linalg.RandomizedSvd;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.function.ToIntFunction;

/**
 * Brings merged updates to their target rank as a {@link RankPolicy} says: dense updates by the
 * randomized or exact SVD, factors by the exact factored SVD (the m×n update is never built), and
 * both clipped by {@code svd_clamp}. Thread-safe.
 */
final class ReRank {
  private final RankPolicy policy;
  /** The dense re-ranks' test matrices: a pure function of the shape, drawn once per merger. */
  private final RandomizedSvd.Sketches sketches = new RandomizedSvd.Sketches(0);

  ReRank(RankPolicy policy) {
    this.policy = policy;
  }

  /** {@code dense} (m×n) truncated to {up, down} of at most {@code target} rank, in {@code manager}. */
  NDArray[] dense(NDManager manager, NDArray dense, int target) {
    ToIntFunction<double[]> rankOf = sigma -> policy.rank(sigma, target);
    NDArray[] factors =
        policy.exactSvd() || RandomizedSvd.exactIsCheap(dense.getShape().get(0), dense.getShape().get(1))
            ? RandomizedSvd.exact(manager, dense, rankOf)
            : RandomizedSvd.truncate(manager, dense, target, rankOf, sketches);
    return clamp(factors);
  }

  /**
   * {@link #dense(NDManager, NDArray, int)} of {@code dense} (m×n float32, row-major) on the host,
   * without libtorch: the randomized SVD's products by {@link
   * dev.loramerge.internal.linalg.OrderedProducts}, for callers where they are {@linkplain
   * dev.loramerge.internal.linalg.OrderedProducts#vectorized fast}; {up, down} in float64.
   */
  double[][] dense(float[] dense, int rows, int cols, int target) {
    ToIntFunction<double[]> rankOf = sigma -> policy.rank(sigma, target);
    return clamp(
        randomized(rows, cols)
            ? RandomizedSvd.truncate(dense, rows, cols, target, rankOf, sketches)
            : RandomizedSvd.exact(dense, rows, cols, rankOf));
  }

  /**
   * Whether {@link #dense} truncates an m×n update by the randomized SVD, which {@link
   * #denseBatch} can do for several at once.
   */
  boolean randomized(long rows, long cols) {
    return !policy.exactSvd() && !RandomizedSvd.exactIsCheap(rows, cols);
  }

  /**
   * {@link #dense} of {@code count} m×n updates stacked as float32 in {@code dense}, for which
   * {@link #randomized} holds, by one batched truncation; per update {up, down} in float64.
   */
  double[][][] denseBatch(NDManager manager, ByteBuffer dense, int count, int rows, int cols, int target) {
    return clamped(
        RandomizedSvd.truncateBatch(manager, dense, count, rows, cols, target, sigma -> policy.rank(sigma, target), sketches));
  }

  /** {@link #denseBatch} of the count×m×n float32 updates {@code dense} holds, where they are. */
  double[][][] denseBatch(NDArray dense, int target) {
    return clamped(RandomizedSvd.truncateBatch(dense, target, sigma -> policy.rank(sigma, target), sketches));
  }

  private double[][][] clamped(double[][][] factors) {
    for (double[][] pair : factors) {
      clamp(pair);
    }
    return factors;
  }

  /** {@code merged} factors of {@code rows} rows truncated to at most {@code target} rank, in float64. */
  Merged factored(Merged merged, int target, int rows) {
    ToIntFunction<double[]> rankOf = sigma -> policy.rank(sigma, target);
    double[][] factors = merged.upDoubles() != null
        ? FactoredSvd.truncate(merged.upDoubles(), merged.downDoubles(), merged.rank(), rankOf)
        : FactoredSvd.truncate(merged.upValues(), merged.downValues(), merged.rank(), rankOf);
    return Merged.ofDoubles(clamp(factors), rows);
  }

  /**
   * PEFT's {@code svd_clamp}: both re-ranked factors clipped to [−h, h], h the {@code svdClamp}
   * quantile (linear interpolation, as torch.quantile) of all their signed entries together.
   */
  private NDArray[] clamp(NDArray[] factors) {
    if (policy.svdClamp().isEmpty()) {
      return factors;
    }
    double limit =
        clampLimit(
            factors[0].toType(DataType.FLOAT64, false).toDoubleArray(),
            factors[1].toType(DataType.FLOAT64, false).toDoubleArray());
    return new NDArray[] {factors[0].clip(-limit, limit), factors[1].clip(-limit, limit)};
  }

  /** {@link #clamp(NDArray[])} of float64 factors, in place. */
  private double[][] clamp(double[][] factors) {
    if (policy.svdClamp().isPresent()) {
      double limit = clampLimit(factors[0], factors[1]);
      for (double[] factor : factors) {
        for (int i = 0; i < factor.length; i++) {
          factor[i] = Math.max(-limit, Math.min(limit, factor[i]));
        }
      }
    }
    return factors;
  }

  private double clampLimit(double[] up, double[] down) {
    double[] all = new double[up.length + down.length];
    System.arraycopy(up, 0, all, 0, up.length);
    System.arraycopy(down, 0, all, up.length, down.length);
    Arrays.sort(all);
    double position = policy.svdClamp().orElseThrow() * (all.length - 1);
    int below = (int) Math.floor(position);
    int above = Math.min(below + 1, all.length - 1);
    return all[below] + (position - below) * (all[above] - all[below]);
  }
}

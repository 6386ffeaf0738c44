package dev.loramerge.internal.linalg;

import static com.google.common.base.Preconditions.checkArgument;

/**
 * Dense products s·B·A of low-rank factors in Java, for the methods that work on full deltas.
 *
 * <p>libtorch's matrix product of an m×r by an r×n matrix with r around 32 is bound by memory,
 * not arithmetic: MKL first zeroes the m×n output, then adds the product into it, and the values
 * are then copied out to a Java array. The Vector API kernel writes each entry once, straight
 * into the Java array: one pass over the output's memory instead of three.
 */
public final class LowRankProducts {
  /**
   * Whether {@link #product} may be called: the module {@code jdk.incubator.vector} is in the boot
   * layer and vectors hold at least 8 floats.
   */
  public static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorProducts.pays();

  private LowRankProducts() {}

  /**
   * s·B·A in a new row-major m×n array: entry (i, j) is Σₖ bᵢₖ·aₖⱼ accumulated with one fused
   * multiply-add per k in increasing order from 0, then multiplied by s in float32 (PEFT's (B·A)·s;
   * libtorch's MKL product gave the same bits on the SDXL benchmark's shapes, which the tests do
   * not rely on).
   * Needs {@link #VECTOR_API}.
   *
   * @param up B, m×r row-major
   * @param down A, r×n row-major
   */
  public static float[] product(float[] up, float[] down, int rank, double scale) {
    checkArgument(VECTOR_API, "the Vector API is not available");
    checkArgument(rank > 0 && up.length % rank == 0 && down.length % rank == 0,
        "factors of %s and %s entries do not share a rank of %s", up.length, down.length, rank);
    int rows = up.length / rank;
    int columns = down.length / rank;
    float[] product = new float[Math.multiplyExact(rows, columns)];
    VectorProducts.product(
        up, 0, rows, down, VectorProducts.panels(down, rank, columns), rank, columns, (float) scale, product);
    return product;
  }
}

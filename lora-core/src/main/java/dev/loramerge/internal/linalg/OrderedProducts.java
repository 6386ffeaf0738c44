package dev.loramerge.internal.linalg;

import static com.google.common.base.Preconditions.checkArgument;

/**
 * Matrix products whose every entry is defined bit for bit: the fused multiply-adds of its inner
 * products in increasing inner index, from +0 ({@code s = fma(aᵢₖ, bₖⱼ, s)} for k = 0, 1, …),
 * whatever the shapes, threads or vector width. A GPU kernel that chains its entries the same way
 * gets the same bits, which a BLAS does not promise (it blocks and reorders the sums).
 *
 * <p>The products of the randomized SVD: a tall dense matrix times a thin one, and the transpose
 * of one times the other, in float32 and float64. With the Vector API ({@link
 * VectorOrderedProducts}) each entry's chain is one lane of a register, four rows by three vectors
 * of columns at a time; without it, {@code Math.fma} row by row of the result (each entry's chain
 * still in increasing inner index, the inner loop along a row of B, which C2 vectorizes).
 */
public final class OrderedProducts {
  /** Whether the Vector API kernels run: the module is in the boot layer and vectors hold 4 doubles or more. */
  static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorOrderedProducts.pays();

  private OrderedProducts() {}

  /**
   * Whether the products run on the Vector API here. Without it they keep their bits but run
   * about 25 times slower than with it (a 1280×1280 by 1280×42 product: 25 against 0.9 ms), far
   * behind a BLAS, so callers that have one use it instead and give up the defined bits.
   */
  public static boolean vectorized() {
    return VECTOR_API;
  }

  /** A·B: A {@code rows}×{@code inner}, B {@code inner}×{@code cols}, all row-major float32. */
  public static float[] times(float[] a, int rows, int inner, float[] b, int cols) {
    return times(a, rows, inner, b, cols, VECTOR_API);
  }

  static float[] times(float[] a, int rows, int inner, float[] b, int cols, boolean vectorized) {
    checkShape(a.length, rows, inner, "A");
    checkShape(b.length, inner, cols, "B");
    float[] out = new float[Math.multiplyExact(rows, cols)];
    if (vectorized) {
      VectorOrderedProducts.times(a, rows, inner, b, cols, out);
      return out;
    }
    for (int i = 0; i < rows; i++) {
      for (int k = 0; k < inner; k++) {
        float factor = a[i * inner + k];
        for (int j = 0; j < cols; j++) {
          out[i * cols + j] = Math.fma(factor, b[k * cols + j], out[i * cols + j]);
        }
      }
    }
    return out;
  }

  /** Aᵀ·B: A {@code rows}×{@code cols}, B {@code rows}×{@code width}; the result is cols×width. */
  public static float[] transposeTimes(float[] a, int rows, int cols, float[] b, int width) {
    return transposeTimes(a, rows, cols, b, width, VECTOR_API);
  }

  static float[] transposeTimes(float[] a, int rows, int cols, float[] b, int width, boolean vectorized) {
    checkShape(a.length, rows, cols, "A");
    checkShape(b.length, rows, width, "B");
    float[] out = new float[Math.multiplyExact(cols, width)];
    if (vectorized) {
      VectorOrderedProducts.transposeTimes(a, rows, cols, b, width, out);
      return out;
    }
    for (int i = 0; i < rows; i++) {
      for (int c = 0; c < cols; c++) {
        float factor = a[i * cols + c];
        for (int j = 0; j < width; j++) {
          out[c * width + j] = Math.fma(factor, b[i * width + j], out[c * width + j]);
        }
      }
    }
    return out;
  }

  /** {@link #times(float[], int, int, float[], int)} in float64. */
  public static double[] times(double[] a, int rows, int inner, double[] b, int cols) {
    return times(a, rows, inner, b, cols, VECTOR_API);
  }

  static double[] times(double[] a, int rows, int inner, double[] b, int cols, boolean vectorized) {
    checkShape(a.length, rows, inner, "A");
    checkShape(b.length, inner, cols, "B");
    double[] out = new double[Math.multiplyExact(rows, cols)];
    if (vectorized) {
      VectorOrderedProducts.times(a, rows, inner, b, cols, out);
      return out;
    }
    for (int i = 0; i < rows; i++) {
      for (int k = 0; k < inner; k++) {
        double factor = a[i * inner + k];
        for (int j = 0; j < cols; j++) {
          out[i * cols + j] = Math.fma(factor, b[k * cols + j], out[i * cols + j]);
        }
      }
    }
    return out;
  }

  /** {@link #transposeTimes(float[], int, int, float[], int)} in float64. */
  public static double[] transposeTimes(double[] a, int rows, int cols, double[] b, int width) {
    return transposeTimes(a, rows, cols, b, width, VECTOR_API);
  }

  static double[] transposeTimes(double[] a, int rows, int cols, double[] b, int width, boolean vectorized) {
    checkShape(a.length, rows, cols, "A");
    checkShape(b.length, rows, width, "B");
    double[] out = new double[Math.multiplyExact(cols, width)];
    if (vectorized) {
      VectorOrderedProducts.transposeTimes(a, rows, cols, b, width, out);
      return out;
    }
    for (int i = 0; i < rows; i++) {
      for (int c = 0; c < cols; c++) {
        double factor = a[i * cols + c];
        for (int j = 0; j < width; j++) {
          out[c * width + j] = Math.fma(factor, b[i * width + j], out[c * width + j]);
        }
      }
    }
    return out;
  }

  private static void checkShape(int length, int rows, int cols, String name) {
    checkArgument(rows >= 0 && cols >= 0 && length == (long) rows * cols, "%s has %s values, not %s×%s", name, length, rows, cols);
  }
}

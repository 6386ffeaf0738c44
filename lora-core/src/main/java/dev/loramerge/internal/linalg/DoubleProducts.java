package dev.loramerge.internal.linalg;

import static com.google.common.base.Preconditions.checkArgument;

/**
 * The float64 products of the factored SVD, in Java: the Gram matrix of a few long rows, and a
 * small matrix times those rows.
 *
 * <p>With R around 64 rows of a few thousand entries these are small products, which libtorch
 * runs at a fraction of the arithmetic rate: each call converts, allocates and wakes its OpenMP
 * workers, and a symmetric Gram costs it the full product. These kernels compute each Gram entry
 * once, in 4×4 blocks held in registers: with the Vector API where the JVM has it, in scalar Java
 * otherwise.
 *
 * <p>Each entry is summed in an order fixed by the shapes alone (lane by lane, then the lanes in
 * order, then the tail), so results do not depend on threads; the two kernels' orders differ.
 */
public final class DoubleProducts {
  /**
   * Whether the Vector API kernel runs: the module {@code jdk.incubator.vector} is in the boot
   * layer and vectors hold at least 4 doubles.
   */
  static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorDoubleProducts.pays();

  /** Rows and columns of the register blocks. */
  static final int BLOCK = 4;

  private DoubleProducts() {}

  /**
   * The {@code count}×{@code count} Gram matrix X·Xᵀ of X = {@code rows} ({@code count} rows of
   * {@code length}, row-major), row-major and exactly symmetric.
   */
  public static double[] gram(double[] rows, int count, int length) {
    return gram(rows, count, length, VECTOR_API);
  }

  /** {@link #gram(double[], int, int)} with or without the Vector API. */
  static double[] gram(double[] rows, int count, int length, boolean vectorized) {
    checkArgument(count > 0 && length >= 0 && rows.length == (long) count * length,
        "%s values are not %s rows of %s", rows.length, count, length);
    int padded = roundUp(count);
    double[] x = padded == count ? rows : java.util.Arrays.copyOf(rows, padded * length);
    double[] gram = new double[padded * padded];
    for (int i = 0; i < padded; i += BLOCK) {
      for (int j = i; j < padded; j += BLOCK) {
        if (vectorized) {
          VectorDoubleProducts.gramBlock(x, length, i, j, gram, padded);
        } else {
          scalarGramBlock(x, length, i, j, gram, padded);
        }
      }
    }
    double[] result = new double[count * count];
    for (int i = 0; i < count; i++) {
      for (int j = i; j < count; j++) {
        double value = gram[i * padded + j];
        result[i * count + j] = value;
        result[j * count + i] = value;
      }
    }
    return result;
  }

  /**
   * P·X: the {@code k}×{@code length} product, row-major, of P = {@code left} ({@code k}×{@code
   * count}) and X = {@code rows} ({@code count}×{@code length}).
   */
  public static double[] product(double[] left, int k, double[] rows, int count, int length) {
    return product(left, k, rows, count, length, VECTOR_API);
  }

  /** {@link #product(double[], int, double[], int, int)} with or without the Vector API. */
  static double[] product(double[] left, int k, double[] rows, int count, int length, boolean vectorized) {
    checkArgument(k > 0 && count > 0 && left.length == (long) k * count, "%s values are not %sx%s", left.length, k, count);
    checkArgument(length >= 0 && rows.length == (long) count * length,
        "%s values are not %s rows of %s", rows.length, count, length);
    int padded = roundUp(k);
    double[] p = padded == k ? left : java.util.Arrays.copyOf(left, padded * count);
    double[] out = new double[padded * length];
    if (vectorized) {
      VectorDoubleProducts.product(p, padded, rows, count, length, out);
    } else {
      scalarProduct(p, padded, rows, count, length, out);
    }
    return padded == k ? out : java.util.Arrays.copyOf(out, k * length);
  }

  private static int roundUp(int count) {
    return (count + BLOCK - 1) / BLOCK * BLOCK;
  }

  /**
   * Gram entries (i..i+3, j..j+3) into {@code gram} (stride {@code stride}). Plain multiply and
   * add, not {@code Math.fma}: without the instruction that is a software routine.
   */
  private static void scalarGramBlock(double[] x, int length, int i, int j, double[] gram, int stride) {
    int i0 = i * length;
    int i1 = i0 + length;
    int i2 = i1 + length;
    int i3 = i2 + length;
    int j0 = j * length;
    int j1 = j0 + length;
    int j2 = j1 + length;
    int j3 = j2 + length;
    double s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    double s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
    for (int t = 0; t < length; t++) {
      double x0 = x[i0 + t];
      double x1 = x[i1 + t];
      double x2 = x[i2 + t];
      double x3 = x[i3 + t];
      double y0 = x[j0 + t];
      double y1 = x[j1 + t];
      double y2 = x[j2 + t];
      double y3 = x[j3 + t];
      s00 += x0 * y0;
      s01 += x0 * y1;
      s02 += x0 * y2;
      s03 += x0 * y3;
      s10 += x1 * y0;
      s11 += x1 * y1;
      s12 += x1 * y2;
      s13 += x1 * y3;
      s20 += x2 * y0;
      s21 += x2 * y1;
      s22 += x2 * y2;
      s23 += x2 * y3;
      s30 += x3 * y0;
      s31 += x3 * y1;
      s32 += x3 * y2;
      s33 += x3 * y3;
    }
    int at = i * stride + j;
    gram[at] = s00;
    gram[at + 1] = s01;
    gram[at + 2] = s02;
    gram[at + 3] = s03;
    at += stride;
    gram[at] = s10;
    gram[at + 1] = s11;
    gram[at + 2] = s12;
    gram[at + 3] = s13;
    at += stride;
    gram[at] = s20;
    gram[at + 1] = s21;
    gram[at + 2] = s22;
    gram[at + 3] = s23;
    at += stride;
    gram[at] = s30;
    gram[at + 1] = s31;
    gram[at + 2] = s32;
    gram[at + 3] = s33;
  }

  /**
   * P·X with {@code k} a multiple of {@link #BLOCK}: four rows of P by four columns of X at a
   * time, the columns copied side by side first (see {@link VectorDoubleProducts}).
   */
  private static void scalarProduct(double[] p, int k, double[] x, int count, int length, double[] out) {
    int whole = length - length % BLOCK;
    double[] panel = new double[count * BLOCK];
    for (int t = 0; t < whole; t += BLOCK) {
      for (int i = 0; i < count; i++) {
        System.arraycopy(x, i * length + t, panel, i * BLOCK, BLOCK);
      }
      for (int c = 0; c < k; c += BLOCK) {
        scalarPanelBlock(p, c, count, panel, out, c * length + t, length);
      }
    }
    for (int row = 0; row < k; row++) {
      productTail(p, row, x, count, length, whole, out);
    }
  }

  private static void scalarPanelBlock(double[] p, int c, int count, double[] panel, double[] out, int at, int length) {
    int p0 = c * count;
    int p1 = p0 + count;
    int p2 = p1 + count;
    int p3 = p2 + count;
    double s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    double s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
    for (int i = 0; i < count; i++) {
      int from = i * BLOCK;
      double x0 = panel[from];
      double x1 = panel[from + 1];
      double x2 = panel[from + 2];
      double x3 = panel[from + 3];
      double q0 = p[p0 + i];
      double q1 = p[p1 + i];
      double q2 = p[p2 + i];
      double q3 = p[p3 + i];
      s00 += q0 * x0;
      s01 += q0 * x1;
      s02 += q0 * x2;
      s03 += q0 * x3;
      s10 += q1 * x0;
      s11 += q1 * x1;
      s12 += q1 * x2;
      s13 += q1 * x3;
      s20 += q2 * x0;
      s21 += q2 * x1;
      s22 += q2 * x2;
      s23 += q2 * x3;
      s30 += q3 * x0;
      s31 += q3 * x1;
      s32 += q3 * x2;
      s33 += q3 * x3;
    }
    out[at] = s00;
    out[at + 1] = s01;
    out[at + 2] = s02;
    out[at + 3] = s03;
    at += length;
    out[at] = s10;
    out[at + 1] = s11;
    out[at + 2] = s12;
    out[at + 3] = s13;
    at += length;
    out[at] = s20;
    out[at + 1] = s21;
    out[at + 2] = s22;
    out[at + 3] = s23;
    at += length;
    out[at] = s30;
    out[at + 1] = s31;
    out[at + 2] = s32;
    out[at + 3] = s33;
  }

  /** Columns {@code from} to the end of row {@code row} of P·X, one entry at a time. */
  static void productTail(double[] p, int row, double[] x, int count, int length, int from, double[] out) {
    for (int t = from; t < length; t++) {
      double sum = 0;
      for (int i = 0; i < count; i++) {
        sum += p[row * count + i] * x[i * length + t];
      }
      out[row * length + t] = sum;
    }
  }
}

package dev.loramerge.internal.linalg;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API kernels of {@link OrderedProducts}: twelve accumulators, four rows (or columns
 * of the transposed matrix) by three vectors of the thin matrix's columns, each lane one entry's
 * chain of fused multiply-adds in increasing inner index. The thin matrix is copied with its
 * columns padded with zeros to a multiple of three vectors, so that every load is whole; the
 * padding's lanes are dropped.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link OrderedProducts} loads it only then.
 */
final class VectorOrderedProducts {
  private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Double> DOUBLES = DoubleVector.SPECIES_PREFERRED;
  /** Columns of the thin matrix per pass: three vectors. */
  private static final int FLOAT_BLOCK = 3 * FLOATS.length();
  private static final int DOUBLE_BLOCK = 3 * DOUBLES.length();

  private VectorOrderedProducts() {}

  /** Whether vectors hold at least 4 doubles (AVX2 or wider). */
  static boolean pays() {
    return DOUBLES.length() >= 4;
  }

  private static int roundUp(int count, int block) {
    return (count + block - 1) / block * block;
  }

  /** A·B into {@code out} (rows×cols): four rows by {@link #FLOAT_BLOCK} columns at a time. */
  static void times(float[] a, int rows, int inner, float[] b, int cols, float[] out) {
    int lanes = FLOATS.length();
    int padded = roundUp(cols, FLOAT_BLOCK);
    float[] bp = padded(b, inner, cols, padded);
    float[] op = padded == cols ? out : new float[rows * padded];
    for (int j = 0; j < padded; j += FLOAT_BLOCK) {
      int i = 0;
      for (; i + 4 <= rows; i += 4) {
        FloatVector s00 = FloatVector.zero(FLOATS), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
        FloatVector s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
        int r0 = i * inner;
        int r1 = r0 + inner;
        int r2 = r1 + inner;
        int r3 = r2 + inner;
        for (int k = 0; k < inner; k++) {
          int at = k * padded + j;
          FloatVector x0 = FloatVector.fromArray(FLOATS, bp, at);
          FloatVector x1 = FloatVector.fromArray(FLOATS, bp, at + lanes);
          FloatVector x2 = FloatVector.fromArray(FLOATS, bp, at + 2 * lanes);
          FloatVector y = FloatVector.broadcast(FLOATS, a[r0 + k]);
          s00 = y.fma(x0, s00);
          s01 = y.fma(x1, s01);
          s02 = y.fma(x2, s02);
          y = FloatVector.broadcast(FLOATS, a[r1 + k]);
          s10 = y.fma(x0, s10);
          s11 = y.fma(x1, s11);
          s12 = y.fma(x2, s12);
          y = FloatVector.broadcast(FLOATS, a[r2 + k]);
          s20 = y.fma(x0, s20);
          s21 = y.fma(x1, s21);
          s22 = y.fma(x2, s22);
          y = FloatVector.broadcast(FLOATS, a[r3 + k]);
          s30 = y.fma(x0, s30);
          s31 = y.fma(x1, s31);
          s32 = y.fma(x2, s32);
        }
        store(s00, s01, s02, op, i * padded + j);
        store(s10, s11, s12, op, (i + 1) * padded + j);
        store(s20, s21, s22, op, (i + 2) * padded + j);
        store(s30, s31, s32, op, (i + 3) * padded + j);
      }
      for (; i < rows; i++) {
        FloatVector s0 = FloatVector.zero(FLOATS), s1 = s0, s2 = s0;
        for (int k = 0; k < inner; k++) {
          int at = k * padded + j;
          FloatVector y = FloatVector.broadcast(FLOATS, a[i * inner + k]);
          s0 = y.fma(FloatVector.fromArray(FLOATS, bp, at), s0);
          s1 = y.fma(FloatVector.fromArray(FLOATS, bp, at + lanes), s1);
          s2 = y.fma(FloatVector.fromArray(FLOATS, bp, at + 2 * lanes), s2);
        }
        store(s0, s1, s2, op, i * padded + j);
      }
    }
    unpad(op, rows, padded, cols, out);
  }

  /** Aᵀ·B into {@code out} (cols×width): four columns of A by {@link #FLOAT_BLOCK} columns of B at a time. */
  static void transposeTimes(float[] a, int rows, int cols, float[] b, int width, float[] out) {
    int lanes = FLOATS.length();
    int padded = roundUp(width, FLOAT_BLOCK);
    float[] bp = padded(b, rows, width, padded);
    float[] op = padded == width ? out : new float[cols * padded];
    for (int j = 0; j < padded; j += FLOAT_BLOCK) {
      int c = 0;
      for (; c + 4 <= cols; c += 4) {
        FloatVector s00 = FloatVector.zero(FLOATS), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
        FloatVector s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
        for (int i = 0; i < rows; i++) {
          int at = i * padded + j;
          int from = i * cols + c;
          FloatVector x0 = FloatVector.fromArray(FLOATS, bp, at);
          FloatVector x1 = FloatVector.fromArray(FLOATS, bp, at + lanes);
          FloatVector x2 = FloatVector.fromArray(FLOATS, bp, at + 2 * lanes);
          FloatVector y = FloatVector.broadcast(FLOATS, a[from]);
          s00 = y.fma(x0, s00);
          s01 = y.fma(x1, s01);
          s02 = y.fma(x2, s02);
          y = FloatVector.broadcast(FLOATS, a[from + 1]);
          s10 = y.fma(x0, s10);
          s11 = y.fma(x1, s11);
          s12 = y.fma(x2, s12);
          y = FloatVector.broadcast(FLOATS, a[from + 2]);
          s20 = y.fma(x0, s20);
          s21 = y.fma(x1, s21);
          s22 = y.fma(x2, s22);
          y = FloatVector.broadcast(FLOATS, a[from + 3]);
          s30 = y.fma(x0, s30);
          s31 = y.fma(x1, s31);
          s32 = y.fma(x2, s32);
        }
        store(s00, s01, s02, op, c * padded + j);
        store(s10, s11, s12, op, (c + 1) * padded + j);
        store(s20, s21, s22, op, (c + 2) * padded + j);
        store(s30, s31, s32, op, (c + 3) * padded + j);
      }
      for (; c < cols; c++) {
        FloatVector s0 = FloatVector.zero(FLOATS), s1 = s0, s2 = s0;
        for (int i = 0; i < rows; i++) {
          int at = i * padded + j;
          FloatVector y = FloatVector.broadcast(FLOATS, a[i * cols + c]);
          s0 = y.fma(FloatVector.fromArray(FLOATS, bp, at), s0);
          s1 = y.fma(FloatVector.fromArray(FLOATS, bp, at + lanes), s1);
          s2 = y.fma(FloatVector.fromArray(FLOATS, bp, at + 2 * lanes), s2);
        }
        store(s0, s1, s2, op, c * padded + j);
      }
    }
    unpad(op, cols, padded, width, out);
  }

  private static void store(FloatVector s0, FloatVector s1, FloatVector s2, float[] out, int at) {
    int lanes = FLOATS.length();
    s0.intoArray(out, at);
    s1.intoArray(out, at + lanes);
    s2.intoArray(out, at + 2 * lanes);
  }

  /** {@code values} (rows×cols) with zero columns up to {@code padded}, or itself where that is cols. */
  private static float[] padded(float[] values, int rows, int cols, int padded) {
    if (padded == cols) {
      return values;
    }
    float[] copy = new float[rows * padded];
    for (int i = 0; i < rows; i++) {
      System.arraycopy(values, i * cols, copy, i * padded, cols);
    }
    return copy;
  }

  private static void unpad(float[] padded, int rows, int stride, int cols, float[] out) {
    if (padded != out) {
      for (int i = 0; i < rows; i++) {
        System.arraycopy(padded, i * stride, out, i * cols, cols);
      }
    }
  }

  /** A·B into {@code out} (rows×cols): four rows by {@link #DOUBLE_BLOCK} columns at a time. */
  static void times(double[] a, int rows, int inner, double[] b, int cols, double[] out) {
    int lanes = DOUBLES.length();
    int padded = roundUp(cols, DOUBLE_BLOCK);
    double[] bp = padded(b, inner, cols, padded);
    double[] op = padded == cols ? out : new double[rows * padded];
    for (int j = 0; j < padded; j += DOUBLE_BLOCK) {
      int i = 0;
      for (; i + 4 <= rows; i += 4) {
        DoubleVector s00 = DoubleVector.zero(DOUBLES), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
        DoubleVector s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
        int r0 = i * inner;
        int r1 = r0 + inner;
        int r2 = r1 + inner;
        int r3 = r2 + inner;
        for (int k = 0; k < inner; k++) {
          int at = k * padded + j;
          DoubleVector x0 = DoubleVector.fromArray(DOUBLES, bp, at);
          DoubleVector x1 = DoubleVector.fromArray(DOUBLES, bp, at + lanes);
          DoubleVector x2 = DoubleVector.fromArray(DOUBLES, bp, at + 2 * lanes);
          DoubleVector y = DoubleVector.broadcast(DOUBLES, a[r0 + k]);
          s00 = y.fma(x0, s00);
          s01 = y.fma(x1, s01);
          s02 = y.fma(x2, s02);
          y = DoubleVector.broadcast(DOUBLES, a[r1 + k]);
          s10 = y.fma(x0, s10);
          s11 = y.fma(x1, s11);
          s12 = y.fma(x2, s12);
          y = DoubleVector.broadcast(DOUBLES, a[r2 + k]);
          s20 = y.fma(x0, s20);
          s21 = y.fma(x1, s21);
          s22 = y.fma(x2, s22);
          y = DoubleVector.broadcast(DOUBLES, a[r3 + k]);
          s30 = y.fma(x0, s30);
          s31 = y.fma(x1, s31);
          s32 = y.fma(x2, s32);
        }
        store(s00, s01, s02, op, i * padded + j);
        store(s10, s11, s12, op, (i + 1) * padded + j);
        store(s20, s21, s22, op, (i + 2) * padded + j);
        store(s30, s31, s32, op, (i + 3) * padded + j);
      }
      for (; i < rows; i++) {
        DoubleVector s0 = DoubleVector.zero(DOUBLES), s1 = s0, s2 = s0;
        for (int k = 0; k < inner; k++) {
          int at = k * padded + j;
          DoubleVector y = DoubleVector.broadcast(DOUBLES, a[i * inner + k]);
          s0 = y.fma(DoubleVector.fromArray(DOUBLES, bp, at), s0);
          s1 = y.fma(DoubleVector.fromArray(DOUBLES, bp, at + lanes), s1);
          s2 = y.fma(DoubleVector.fromArray(DOUBLES, bp, at + 2 * lanes), s2);
        }
        store(s0, s1, s2, op, i * padded + j);
      }
    }
    unpad(op, rows, padded, cols, out);
  }

  /** Aᵀ·B into {@code out} (cols×width): four columns of A by {@link #DOUBLE_BLOCK} columns of B at a time. */
  static void transposeTimes(double[] a, int rows, int cols, double[] b, int width, double[] out) {
    int lanes = DOUBLES.length();
    int padded = roundUp(width, DOUBLE_BLOCK);
    double[] bp = padded(b, rows, width, padded);
    double[] op = padded == width ? out : new double[cols * padded];
    for (int j = 0; j < padded; j += DOUBLE_BLOCK) {
      int c = 0;
      for (; c + 4 <= cols; c += 4) {
        DoubleVector s00 = DoubleVector.zero(DOUBLES), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
        DoubleVector s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
        for (int i = 0; i < rows; i++) {
          int at = i * padded + j;
          int from = i * cols + c;
          DoubleVector x0 = DoubleVector.fromArray(DOUBLES, bp, at);
          DoubleVector x1 = DoubleVector.fromArray(DOUBLES, bp, at + lanes);
          DoubleVector x2 = DoubleVector.fromArray(DOUBLES, bp, at + 2 * lanes);
          DoubleVector y = DoubleVector.broadcast(DOUBLES, a[from]);
          s00 = y.fma(x0, s00);
          s01 = y.fma(x1, s01);
          s02 = y.fma(x2, s02);
          y = DoubleVector.broadcast(DOUBLES, a[from + 1]);
          s10 = y.fma(x0, s10);
          s11 = y.fma(x1, s11);
          s12 = y.fma(x2, s12);
          y = DoubleVector.broadcast(DOUBLES, a[from + 2]);
          s20 = y.fma(x0, s20);
          s21 = y.fma(x1, s21);
          s22 = y.fma(x2, s22);
          y = DoubleVector.broadcast(DOUBLES, a[from + 3]);
          s30 = y.fma(x0, s30);
          s31 = y.fma(x1, s31);
          s32 = y.fma(x2, s32);
        }
        store(s00, s01, s02, op, c * padded + j);
        store(s10, s11, s12, op, (c + 1) * padded + j);
        store(s20, s21, s22, op, (c + 2) * padded + j);
        store(s30, s31, s32, op, (c + 3) * padded + j);
      }
      for (; c < cols; c++) {
        DoubleVector s0 = DoubleVector.zero(DOUBLES), s1 = s0, s2 = s0;
        for (int i = 0; i < rows; i++) {
          int at = i * padded + j;
          DoubleVector y = DoubleVector.broadcast(DOUBLES, a[i * cols + c]);
          s0 = y.fma(DoubleVector.fromArray(DOUBLES, bp, at), s0);
          s1 = y.fma(DoubleVector.fromArray(DOUBLES, bp, at + lanes), s1);
          s2 = y.fma(DoubleVector.fromArray(DOUBLES, bp, at + 2 * lanes), s2);
        }
        store(s0, s1, s2, op, c * padded + j);
      }
    }
    unpad(op, cols, padded, width, out);
  }

  private static void store(DoubleVector s0, DoubleVector s1, DoubleVector s2, double[] out, int at) {
    int lanes = DOUBLES.length();
    s0.intoArray(out, at);
    s1.intoArray(out, at + lanes);
    s2.intoArray(out, at + 2 * lanes);
  }

  /** {@code values} (rows×cols) with zero columns up to {@code padded}, or itself where that is cols. */
  private static double[] padded(double[] values, int rows, int cols, int padded) {
    if (padded == cols) {
      return values;
    }
    double[] copy = new double[rows * padded];
    for (int i = 0; i < rows; i++) {
      System.arraycopy(values, i * cols, copy, i * padded, cols);
    }
    return copy;
  }

  private static void unpad(double[] padded, int rows, int stride, int cols, double[] out) {
    if (padded != out) {
      for (int i = 0; i < rows; i++) {
        System.arraycopy(padded, i * stride, out, i * cols, cols);
      }
    }
  }
}

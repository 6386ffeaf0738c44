package dev.loramerge.internal.linalg;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API kernel of {@link DoubleProducts}: sixteen accumulators of a 4×4 block, each
 * vector loaded serving four of them.
 *
 * <p>The product reads X through {@link #panel}, a copy of a few columns of all its rows side by
 * side: read in place, the rows of a panel are a row of X apart, and at 2048 or 10240 columns they
 * fall into the same sets of the L1 cache, which halves the kernel's rate.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link DoubleProducts} loads it only then.
 */
final class VectorDoubleProducts {
  /** The widest doubles, as {@code VectorTies} uses: one species per lane type across the kernels. */
  private static final VectorSpecies<Double> DOUBLES = DoubleVector.SPECIES_PREFERRED;
  /** Columns of X in a panel of the product. */
  private static final int PANEL = 2 * DOUBLES.length();

  private VectorDoubleProducts() {}

  /** Whether vectors hold at least 4 doubles (AVX2 or wider). */
  static boolean pays() {
    return DOUBLES.length() >= 4;
  }

  /** {@code gram} entries (i..i+3, j..j+3), stride {@code stride}, of the rows of {@code x}. */
  static void gramBlock(double[] x, int length, int i, int j, double[] gram, int stride) {
    int lanes = DOUBLES.length();
    int whole = length - length % lanes;
    int i0 = i * length;
    int i1 = i0 + length;
    int i2 = i1 + length;
    int i3 = i2 + length;
    int j0 = j * length;
    int j1 = j0 + length;
    int j2 = j1 + length;
    int j3 = j2 + length;
    DoubleVector s00 = DoubleVector.zero(DOUBLES);
    DoubleVector s01 = s00;
    DoubleVector s02 = s00;
    DoubleVector s03 = s00;
    DoubleVector s10 = s00;
    DoubleVector s11 = s00;
    DoubleVector s12 = s00;
    DoubleVector s13 = s00;
    DoubleVector s20 = s00;
    DoubleVector s21 = s00;
    DoubleVector s22 = s00;
    DoubleVector s23 = s00;
    DoubleVector s30 = s00;
    DoubleVector s31 = s00;
    DoubleVector s32 = s00;
    DoubleVector s33 = s00;
    for (int t = 0; t < whole; t += lanes) {
      DoubleVector x0 = DoubleVector.fromArray(DOUBLES, x, i0 + t);
      DoubleVector x1 = DoubleVector.fromArray(DOUBLES, x, i1 + t);
      DoubleVector x2 = DoubleVector.fromArray(DOUBLES, x, i2 + t);
      DoubleVector x3 = DoubleVector.fromArray(DOUBLES, x, i3 + t);
      DoubleVector y0 = DoubleVector.fromArray(DOUBLES, x, j0 + t);
      DoubleVector y1 = DoubleVector.fromArray(DOUBLES, x, j1 + t);
      DoubleVector y2 = DoubleVector.fromArray(DOUBLES, x, j2 + t);
      DoubleVector y3 = DoubleVector.fromArray(DOUBLES, x, j3 + t);
      s00 = x0.fma(y0, s00);
      s01 = x0.fma(y1, s01);
      s02 = x0.fma(y2, s02);
      s03 = x0.fma(y3, s03);
      s10 = x1.fma(y0, s10);
      s11 = x1.fma(y1, s11);
      s12 = x1.fma(y2, s12);
      s13 = x1.fma(y3, s13);
      s20 = x2.fma(y0, s20);
      s21 = x2.fma(y1, s21);
      s22 = x2.fma(y2, s22);
      s23 = x2.fma(y3, s23);
      s30 = x3.fma(y0, s30);
      s31 = x3.fma(y1, s31);
      s32 = x3.fma(y2, s32);
      s33 = x3.fma(y3, s33);
    }
    // Reduced here: a vector handed to a method C2 does not inline ("too big" beside this loop)
    // has to be boxed, and with it, depending on C2's compile order, the loop's vectors.
    double[] sums = {
      s00.reduceLanes(VectorOperators.ADD), s01.reduceLanes(VectorOperators.ADD),
      s02.reduceLanes(VectorOperators.ADD), s03.reduceLanes(VectorOperators.ADD),
      s10.reduceLanes(VectorOperators.ADD), s11.reduceLanes(VectorOperators.ADD),
      s12.reduceLanes(VectorOperators.ADD), s13.reduceLanes(VectorOperators.ADD),
      s20.reduceLanes(VectorOperators.ADD), s21.reduceLanes(VectorOperators.ADD),
      s22.reduceLanes(VectorOperators.ADD), s23.reduceLanes(VectorOperators.ADD),
      s30.reduceLanes(VectorOperators.ADD), s31.reduceLanes(VectorOperators.ADD),
      s32.reduceLanes(VectorOperators.ADD), s33.reduceLanes(VectorOperators.ADD)
    };
    storeBlock(sums, x, i, j, whole, length, gram, stride);
  }

  /** A Gram block's lane sums plus the scalar tail of each dot product, into {@code gram}. */
  private static void storeBlock(double[] sums, double[] x, int i, int j, int whole, int length, double[] gram, int stride) {
    for (int a = 0; a < DoubleProducts.BLOCK; a++) {
      for (int b = 0; b < DoubleProducts.BLOCK; b++) {
        double sum = sums[a * DoubleProducts.BLOCK + b];
        int iStart = (i + a) * length;
        int jStart = (j + b) * length;
        for (int t = whole; t < length; t++) {
          sum += x[iStart + t] * x[jStart + t];
        }
        gram[(i + a) * stride + j + b] = sum;
      }
    }
  }

  /** P·X into {@code out}, {@code k} a multiple of {@link DoubleProducts#BLOCK}. */
  static void product(double[] p, int k, double[] x, int count, int length, double[] out) {
    int lanes = DOUBLES.length();
    int whole = length - length % PANEL;
    double[] panel = new double[count * PANEL];
    for (int t = 0; t < whole; t += PANEL) {
      for (int i = 0; i < count; i++) {
        System.arraycopy(x, i * length + t, panel, i * PANEL, PANEL);
      }
      for (int c = 0; c < k; c += DoubleProducts.BLOCK) {
        panelBlock(p, c, count, panel, lanes, out, c * length + t, length);
      }
    }
    for (int row = 0; row < k; row++) {
      DoubleProducts.productTail(p, row, x, count, length, whole, out);
    }
  }

  /** Rows c..c+3 of P times one panel: eight accumulators, two vectors of columns by four rows. */
  private static void panelBlock(double[] p, int c, int count, double[] panel, int lanes, double[] out, int at, int length) {
    int p0 = c * count;
    int p1 = p0 + count;
    int p2 = p1 + count;
    int p3 = p2 + count;
    DoubleVector s00 = DoubleVector.zero(DOUBLES);
    DoubleVector s01 = s00;
    DoubleVector s10 = s00;
    DoubleVector s11 = s00;
    DoubleVector s20 = s00;
    DoubleVector s21 = s00;
    DoubleVector s30 = s00;
    DoubleVector s31 = s00;
    for (int i = 0; i < count; i++) {
      DoubleVector x0 = DoubleVector.fromArray(DOUBLES, panel, i * PANEL);
      DoubleVector x1 = DoubleVector.fromArray(DOUBLES, panel, i * PANEL + lanes);
      DoubleVector q0 = DoubleVector.broadcast(DOUBLES, p[p0 + i]);
      DoubleVector q1 = DoubleVector.broadcast(DOUBLES, p[p1 + i]);
      DoubleVector q2 = DoubleVector.broadcast(DOUBLES, p[p2 + i]);
      DoubleVector q3 = DoubleVector.broadcast(DOUBLES, p[p3 + i]);
      s00 = x0.fma(q0, s00);
      s01 = x1.fma(q0, s01);
      s10 = x0.fma(q1, s10);
      s11 = x1.fma(q1, s11);
      s20 = x0.fma(q2, s20);
      s21 = x1.fma(q2, s21);
      s30 = x0.fma(q3, s30);
      s31 = x1.fma(q3, s31);
    }
    s00.intoArray(out, at);
    s01.intoArray(out, at + lanes);
    s10.intoArray(out, at + length);
    s11.intoArray(out, at + length + lanes);
    s20.intoArray(out, at + 2 * length);
    s21.intoArray(out, at + 2 * length + lanes);
    s30.intoArray(out, at + 3 * length);
    s31.intoArray(out, at + 3 * length + lanes);
  }
}

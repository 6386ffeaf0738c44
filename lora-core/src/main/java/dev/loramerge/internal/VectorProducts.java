package dev.loramerge.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API kernel of {@link LowRankProducts}: two output rows and four vectors of columns
 * at a time accumulate r fused multiply-adds in eight registers and are stored once; each vector
 * of A loaded serves both rows.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link LowRankProducts} loads it only then.
 */
final class VectorProducts {
  private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;

  private VectorProducts() {}

  /** Whether vectors hold at least 8 floats here (AVX2 or wider). */
  static boolean pays() {
    return FLOATS.length() >= 8;
  }

  static void product(float[] up, float[] down, int rows, int rank, int columns, float scale, float[] out) {
    product(up, 0, down, rows, rank, columns, scale, out);
  }

  /** Rows {@code firstRow} to {@code firstRow + rows} of the product, written to {@code out} from 0. */
  static void product(float[] up, int firstRow, float[] down, int rows, int rank, int columns, float scale, float[] out) {
    int row = 0;
    for (; row + 1 < rows; row += 2) {
      rowPair(up, (firstRow + row) * rank, down, rank, columns, scale, out, row * columns);
    }
    for (; row < rows; row++) {
      singleRow(up, (firstRow + row) * rank, down, rank, columns, scale, out, row * columns, 0);
    }
  }

  /**
   * Rows {@code upStart / rank} and the next. A method of its own, with the scale broadcast
   * before its loops: a broadcast in a loop around the vector loop made C2 box the vectors on
   * JDK 17.
   */
  private static void rowPair(float[] up, int upStart, float[] down, int rank, int columns, float scale, float[] out, int outStart) {
    int lanes = FLOATS.length();
    FloatVector scales = FloatVector.broadcast(FLOATS, scale);
    int column = 0;
    for (; column <= columns - 4 * lanes; column += 4 * lanes) {
      FloatVector first0 = FloatVector.zero(FLOATS);
      FloatVector first1 = first0;
      FloatVector first2 = first0;
      FloatVector first3 = first0;
      FloatVector second0 = first0;
      FloatVector second1 = first0;
      FloatVector second2 = first0;
      FloatVector second3 = first0;
      for (int k = 0; k < rank; k++) {
        FloatVector first = FloatVector.broadcast(FLOATS, up[upStart + k]);
        FloatVector second = FloatVector.broadcast(FLOATS, up[upStart + rank + k]);
        int at = k * columns + column;
        FloatVector a0 = FloatVector.fromArray(FLOATS, down, at);
        FloatVector a1 = FloatVector.fromArray(FLOATS, down, at + lanes);
        FloatVector a2 = FloatVector.fromArray(FLOATS, down, at + 2 * lanes);
        FloatVector a3 = FloatVector.fromArray(FLOATS, down, at + 3 * lanes);
        first0 = a0.fma(first, first0);
        first1 = a1.fma(first, first1);
        first2 = a2.fma(first, first2);
        first3 = a3.fma(first, first3);
        second0 = a0.fma(second, second0);
        second1 = a1.fma(second, second1);
        second2 = a2.fma(second, second2);
        second3 = a3.fma(second, second3);
      }
      first0.mul(scales).intoArray(out, outStart + column);
      first1.mul(scales).intoArray(out, outStart + column + lanes);
      first2.mul(scales).intoArray(out, outStart + column + 2 * lanes);
      first3.mul(scales).intoArray(out, outStart + column + 3 * lanes);
      second0.mul(scales).intoArray(out, outStart + columns + column);
      second1.mul(scales).intoArray(out, outStart + columns + column + lanes);
      second2.mul(scales).intoArray(out, outStart + columns + column + 2 * lanes);
      second3.mul(scales).intoArray(out, outStart + columns + column + 3 * lanes);
    }
    singleRow(up, upStart, down, rank, columns, scale, out, outStart, column);
    singleRow(up, upStart + rank, down, rank, columns, scale, out, outStart + columns, column);
  }

  /** One row's columns from {@code from} on. */
  private static void singleRow(
      float[] up, int upStart, float[] down, int rank, int columns, float scale, float[] out, int outStart, int from) {
    int lanes = FLOATS.length();
    FloatVector scales = FloatVector.broadcast(FLOATS, scale);
    int column = from;
    for (; column <= columns - lanes; column += lanes) {
      FloatVector sum = FloatVector.zero(FLOATS);
      for (int k = 0; k < rank; k++) {
        sum = FloatVector.fromArray(FLOATS, down, k * columns + column).fma(FloatVector.broadcast(FLOATS, up[upStart + k]), sum);
      }
      sum.mul(scales).intoArray(out, outStart + column);
    }
    for (; column < columns; column++) {
      float sum = 0;
      for (int k = 0; k < rank; k++) {
        sum = Math.fma(up[upStart + k], down[k * columns + column], sum);
      }
      out[outStart + column] = sum * scale;
    }
  }
}

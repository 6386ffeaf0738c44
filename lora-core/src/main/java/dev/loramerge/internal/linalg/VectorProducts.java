package dev.loramerge.internal.linalg;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API kernel of {@link LowRankProducts} and of {@code NarrowFusion}'s products: two
 * output rows and one panel of four vectors of columns at a time accumulate r fused multiply-adds
 * in eight registers and are stored once; each vector of A loaded serves both rows.
 *
 * <p>A is read from {@link #panels}, a copy in which each panel's r rows of four vectors lie side
 * by side. Read in place, the r rows of a panel are a row of A apart, and where that is a multiple
 * of 4 KiB (2048 or 5120 columns) they fall into the same few sets of the L1 cache and evict each
 * other, and the product takes twice the time per entry. Rows are taken in blocks, panel by
 * panel, so that a panel (8 KiB at rank 32 with AVX-512) stays in L1 for the whole block.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link LowRankProducts} and {@code NarrowFusion} load it only then.
 */
public final class VectorProducts {
  private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
  /** Columns in a panel. */
  private static final int PANEL = 4 * FLOATS.length();
  /** Rows multiplied panel by panel before the next rows: their B rows stay in L1 too. */
  private static final int ROW_BLOCK = 64;

  private VectorProducts() {}

  /** Whether vectors hold at least 8 floats here (AVX2 or wider). */
  public static boolean pays() {
    return FLOATS.length() >= 8;
  }

  /**
   * A (r×n, row-major) rearranged for {@link #product}: panel p's rows k = 0…r−1 of {@link #PANEL}
   * columns each, one after the other. Columns after the last whole panel are not in it.
   */
  public static float[] panels(float[] down, int rank, int columns) {
    int panels = columns / PANEL;
    float[] packed = new float[panels * rank * PANEL];
    for (int panel = 0; panel < panels; panel++) {
      for (int k = 0; k < rank; k++) {
        System.arraycopy(down, k * columns + panel * PANEL, packed, (panel * rank + k) * PANEL, PANEL);
      }
    }
    return packed;
  }

  /**
   * Rows {@code firstRow} to {@code firstRow + rows} of s·B·A, written to {@code out} from 0.
   * {@code panels} is {@link #panels}{@code (down, rank, columns)}; the columns it does not hold
   * are read from {@code down}.
   */
  public static void product(
      float[] up, int firstRow, int rows, float[] down, float[] panels, int rank, int columns, float scale, float[] out) {
    int wholePanels = columns / PANEL;
    for (int blockStart = 0; blockStart < rows; blockStart += ROW_BLOCK) {
      int blockEnd = Math.min(rows, blockStart + ROW_BLOCK);
      for (int panel = 0; panel < wholePanels; panel++) {
        int row = blockStart;
        for (; row + 1 < blockEnd; row += 2) {
          panelPair(up, (firstRow + row) * rank, panels, panel * rank * PANEL, rank, scale, out, row * columns + panel * PANEL, columns);
        }
        if (row < blockEnd) {
          singleRow(up, (firstRow + row) * rank, down, rank, columns, scale, out, row * columns, panel * PANEL, (panel + 1) * PANEL);
        }
      }
      if (wholePanels * PANEL < columns) {
        for (int row = blockStart; row < blockEnd; row++) {
          singleRow(up, (firstRow + row) * rank, down, rank, columns, scale, out, row * columns, wholePanels * PANEL, columns);
        }
      }
    }
  }

  /**
   * One panel of the row at {@code upStart / rank} and the next. A method of its own, with the
   * scale broadcast here: a broadcast in a loop around the vector loop made C2 box the vectors on
   * JDK 17.
   */
  private static void panelPair(
      float[] up, int upStart, float[] panels, int panelStart, int rank, float scale, float[] out, int outStart, int columns) {
    int lanes = FLOATS.length();
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
      int at = panelStart + k * PANEL;
      FloatVector a0 = FloatVector.fromArray(FLOATS, panels, at);
      FloatVector a1 = FloatVector.fromArray(FLOATS, panels, at + lanes);
      FloatVector a2 = FloatVector.fromArray(FLOATS, panels, at + 2 * lanes);
      FloatVector a3 = FloatVector.fromArray(FLOATS, panels, at + 3 * lanes);
      first0 = a0.fma(first, first0);
      first1 = a1.fma(first, first1);
      first2 = a2.fma(first, first2);
      first3 = a3.fma(first, first3);
      second0 = a0.fma(second, second0);
      second1 = a1.fma(second, second1);
      second2 = a2.fma(second, second2);
      second3 = a3.fma(second, second3);
    }
    FloatVector scales = FloatVector.broadcast(FLOATS, scale);
    first0.mul(scales).intoArray(out, outStart);
    first1.mul(scales).intoArray(out, outStart + lanes);
    first2.mul(scales).intoArray(out, outStart + 2 * lanes);
    first3.mul(scales).intoArray(out, outStart + 3 * lanes);
    second0.mul(scales).intoArray(out, outStart + columns);
    second1.mul(scales).intoArray(out, outStart + columns + lanes);
    second2.mul(scales).intoArray(out, outStart + columns + 2 * lanes);
    second3.mul(scales).intoArray(out, outStart + columns + 3 * lanes);
  }

  /** One row's columns {@code from} to {@code to}, from A in place: a vector at a time, then scalar. */
  private static void singleRow(
      float[] up, int upStart, float[] down, int rank, int columns, float scale, float[] out, int outStart, int from, int to) {
    int lanes = FLOATS.length();
    FloatVector scales = FloatVector.broadcast(FLOATS, scale);
    int column = from;
    for (; column <= to - lanes; column += lanes) {
      FloatVector sum = FloatVector.zero(FLOATS);
      for (int k = 0; k < rank; k++) {
        sum = FloatVector.fromArray(FLOATS, down, k * columns + column).fma(FloatVector.broadcast(FLOATS, up[upStart + k]), sum);
      }
      sum.mul(scales).intoArray(out, outStart + column);
    }
    for (; column < to; column++) {
      float sum = 0;
      for (int k = 0; k < rank; k++) {
        sum = Math.fma(up[upStart + k], down[k * columns + column], sum);
      }
      out[outStart + column] = sum * scale;
    }
  }
}

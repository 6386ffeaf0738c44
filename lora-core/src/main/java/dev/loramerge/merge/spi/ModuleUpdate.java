package dev.loramerge.merge.spi;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.base.Strings;
import dev.loramerge.TensorData;
import java.util.Arrays;

/**
 * A merged module's update, scale 1, in one of the forms the merger takes: factors B' (out×r) and
 * A' (r×in·k·k) whose product is the update, in float32 ({@link Factors}), in float64 ({@link
 * DoubleFactors}) or already in the merge's output type ({@link Encoded}); or the full out×in·k·k
 * update ({@link Dense}), which the merger re-ranks by SVD.
 *
 * <p>The records take their arrays over without copying them, as a module's factors and updates
 * run to tens of megabytes: an algorithm hands over arrays it made for the update and does not
 * touch them afterwards, and the merger does not hand them on.
 */
public sealed interface ModuleUpdate
    permits ModuleUpdate.Factors, ModuleUpdate.DoubleFactors, ModuleUpdate.Encoded, ModuleUpdate.Dense {
  /** The rank of the factors, or the smaller side of a dense update. */
  int rank();

  /**
   * The update B'·A' from float32 values, row-major: {@code up} out×{@code rank}, {@code down}
   * {@code rank}×in·k·k. The merger rounds them to the output type in Java, without a native call.
   */
  record Factors(float[] up, float[] down, int rank) implements ModuleUpdate {
    /** Checks that the arrays make factors of {@code rank}. */
    public Factors {
      checkNotNull(up, "up");
      checkNotNull(down, "down");
      checkFactors(up.length, down.length, rank);
    }
  }

  /**
   * The update B'·A' from float64 values, row-major, as {@link Factors}: what an exact method
   * gives where the merge is {@linkplain Offer.Precision#FLOAT64 offered float64}, so that a fuse
   * adds its update without rounding it to float32 first.
   */
  record DoubleFactors(double[] up, double[] down, int rank) implements ModuleUpdate {
    /** Checks that the arrays make factors of {@code rank}. */
    public DoubleFactors {
      checkNotNull(up, "up");
      checkNotNull(down, "down");
      checkFactors(up.length, down.length, rank);
    }
  }

  /**
   * The update B'·A' as tensors already in the type the merge {@linkplain Offer#encoding()
   * offered}: {@code up} out×r and {@code down} r×in·k·k, both 2-D and of that type, r at most the
   * inputs' ranks together. The merger writes them as they are (reshaped to the module's layout).
   */
  record Encoded(TensorData up, TensorData down) implements ModuleUpdate {
    /** Checks that the tensors are factors of one type. */
    public Encoded {
      checkNotNull(up, "up");
      checkNotNull(down, "down");
      if (up.rank() != 2 || down.rank() != 2 || up.dim(1) != down.dim(0)) {
        throw new IllegalArgumentException(
            Strings.lenientFormat("factors %s and %s do not multiply", Arrays.toString(up.shape()), Arrays.toString(down.shape())));
      }
      checkArgument(up.dtype() == down.dtype(), "factors of %s and %s", up.dtype(), down.dtype());
    }

    @Override
    public int rank() {
      return Math.toIntExact(up.dim(1));
    }
  }

  /**
   * The full update from float32 values, {@code columns} (in·k·k) to a row, row-major. The merger
   * copies it into native memory it reuses from module to module (an array made from Java values
   * gets fresh memory that only a collection frees) and re-ranks it.
   */
  record Dense(float[] values, int columns) implements ModuleUpdate {
    /** Checks that the values make whole rows. */
    public Dense {
      checkNotNull(values, "values");
      checkArgument(columns > 0 && values.length % columns == 0, "%s values do not make rows of %s", values.length, columns);
    }

    /** The number of rows, out. */
    public int rows() {
      return values.length / columns;
    }

    @Override
    public int rank() {
      return Math.min(rows(), columns);
    }
  }

  private static void checkFactors(int upLength, int downLength, int rank) {
    checkArgument(rank > 0, "rank must be positive, got %s", rank);
    checkArgument(
        upLength % rank == 0 && downLength % rank == 0,
        "%s up values and %s down values do not make factors of rank %s", upLength, downLength, rank);
  }
}

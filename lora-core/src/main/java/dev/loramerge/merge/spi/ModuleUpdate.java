package dev.loramerge.merge.spi;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import ai.djl.ndarray.NDArray;
import dev.loramerge.TensorData;
import java.util.Arrays;
import java.util.Optional;

/**
 * A merged module's update, scale 1: either factored (B' out×r, A' r×in·k·k, update B'·A', as
 * arrays, as float32 values, or as tensors already in the output type) or dense (the out×in·k·k
 * update itself, which the merger re-ranks by SVD).
 */
public final class ModuleUpdate {
  private final NDArray up;
  private final NDArray down;
  private final NDArray dense;
  private final float[] upValues;
  private final float[] downValues;
  private final int rank;
  private final float[] denseValues;
  private final int denseColumns;
  private final TensorData encodedUp;
  private final TensorData encodedDown;

  private ModuleUpdate(NDArray up, NDArray down, NDArray dense) {
    this(up, down, dense, null, null, 0, null, 0, null, null);
  }

  private ModuleUpdate(
      NDArray up, NDArray down, NDArray dense, float[] upValues, float[] downValues, int rank, float[] denseValues,
      int denseColumns, TensorData encodedUp, TensorData encodedDown) {
    this.up = up;
    this.down = down;
    this.dense = dense;
    this.upValues = upValues;
    this.downValues = downValues;
    this.rank = rank;
    this.denseValues = denseValues;
    this.denseColumns = denseColumns;
    this.encodedUp = encodedUp;
    this.encodedDown = encodedDown;
  }

  /** The update B'·A'. */
  public static ModuleUpdate factored(NDArray up, NDArray down) {
    checkNotNull(up, "up");
    checkNotNull(down, "down");
    checkArgument(
        up.getShape().dimension() == 2 && down.getShape().dimension() == 2 && up.getShape().get(1) == down.getShape().get(0),
        "factors %s and %s do not multiply", up.getShape(), down.getShape());
    return new ModuleUpdate(up, down, null);
  }

  /**
   * The update B'·A' from float32 values: {@code up} out×{@code rank} and {@code down}
   * {@code rank}×in·k·k, row-major. The update takes the arrays over; the caller must not change
   * them afterwards. The merger rounds them to the output type in Java, without a native call.
   */
  public static ModuleUpdate factored(float[] up, float[] down, int rank) {
    checkNotNull(up, "up");
    checkNotNull(down, "down");
    checkArgument(rank > 0, "rank must be positive, got %s", rank);
    checkArgument(
        up.length % rank == 0 && down.length % rank == 0,
        "%s up values and %s down values do not make factors of rank %s", up.length, down.length, rank);
    return new ModuleUpdate(null, null, null, up, down, rank, null, 0, null, null);
  }

  /**
   * The update B'·A' as tensors already in the merge's {@link ModuleMerge#outputType()}: {@code
   * up} out×r and {@code down} r×in·k·k, both 2-D and of that type. The merger writes them as they
   * are (reshaped to the module's layout).
   */
  public static ModuleUpdate encoded(TensorData up, TensorData down) {
    checkNotNull(up, "up");
    checkNotNull(down, "down");
    checkArgument(
        up.rank() == 2 && down.rank() == 2 && up.dim(1) == down.dim(0),
        "factors %s and %s do not multiply", Arrays.toString(up.shape()), Arrays.toString(down.shape()));
    checkArgument(up.dtype() == down.dtype(), "factors of %s and %s", up.dtype(), down.dtype());
    return new ModuleUpdate(null, null, null, null, null, 0, null, 0, up, down);
  }

  /** A full out×in·k·k update. */
  public static ModuleUpdate dense(NDArray delta) {
    checkNotNull(delta, "delta");
    checkArgument(delta.getShape().dimension() == 2, "a dense update must be 2-D, got %s", delta.getShape());
    return new ModuleUpdate(null, null, delta);
  }

  /**
   * A full update from float32 values, {@code columns} (in·k·k) to a row, row-major. The update
   * takes the array over; the merger copies it into native memory it reuses from module to module
   * (an array made from Java values gets fresh memory that only a collection frees).
   */
  public static ModuleUpdate dense(float[] values, int columns) {
    checkNotNull(values, "values");
    checkArgument(columns > 0 && values.length % columns == 0, "%s values do not make rows of %s", values.length, columns);
    return new ModuleUpdate(null, null, null, null, null, 0, values, columns, null, null);
  }

  /** Whether this is a full update rather than factors. */
  public boolean isDense() {
    return dense != null || denseValues != null;
  }

  /** The full update's values (row-major), when given as values; the update's own array. */
  public Optional<float[]> denseValues() {
    return Optional.ofNullable(denseValues);
  }

  /** The full update's row length, when given as values (0 otherwise). */
  public int denseColumns() {
    return denseColumns;
  }

  /** Whether this is factors already in the output type ({@link #encoded}). */
  public boolean isEncoded() {
    return encodedUp != null;
  }

  /** B' (out×r), when {@linkplain #encoded encoded}. */
  public Optional<TensorData> encodedUp() {
    return Optional.ofNullable(encodedUp);
  }

  /** A' (r×in·k·k), when {@linkplain #encoded encoded}. */
  public Optional<TensorData> encodedDown() {
    return Optional.ofNullable(encodedDown);
  }

  /** Whether this is factors given as float32 values rather than arrays. */
  public boolean isValues() {
    return upValues != null;
  }

  /** B' (out×rank, row-major), when given as values; the update's own array, not a copy. */
  public Optional<float[]> upValues() {
    return Optional.ofNullable(upValues);
  }

  /** A' (rank×in·k·k, row-major), when given as values; the update's own array, not a copy. */
  public Optional<float[]> downValues() {
    return Optional.ofNullable(downValues);
  }

  /** The rank of factors given as values (0 otherwise). */
  public int rank() {
    return rank;
  }

  /** B', when factored. */
  public Optional<NDArray> up() {
    return Optional.ofNullable(up);
  }

  /** A', when factored. */
  public Optional<NDArray> down() {
    return Optional.ofNullable(down);
  }

  /** The full update, when dense and given as an array. */
  public Optional<NDArray> dense() {
    return Optional.ofNullable(dense);
  }
}

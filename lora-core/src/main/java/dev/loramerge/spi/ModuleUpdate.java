package dev.loramerge.spi;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import ai.djl.ndarray.NDArray;
import java.util.Optional;

/**
 * A merged module's update, scale 1: either factored (B' out×r, A' r×in·k·k, update B'·A') or
 * dense (the out×in·k·k update itself, which the merger re-ranks by SVD).
 */
public final class ModuleUpdate {
  private final NDArray up;
  private final NDArray down;
  private final NDArray dense;

  private ModuleUpdate(NDArray up, NDArray down, NDArray dense) {
    this.up = up;
    this.down = down;
    this.dense = dense;
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

  /** A full out×in·k·k update. */
  public static ModuleUpdate dense(NDArray delta) {
    checkNotNull(delta, "delta");
    checkArgument(delta.getShape().dimension() == 2, "a dense update must be 2-D, got %s", delta.getShape());
    return new ModuleUpdate(null, null, delta);
  }

  /** Whether this is a full update rather than factors. */
  public boolean isDense() {
    return dense != null;
  }

  /** B', when factored. */
  public Optional<NDArray> up() {
    return Optional.ofNullable(up);
  }

  /** A', when factored. */
  public Optional<NDArray> down() {
    return Optional.ofNullable(down);
  }

  /** The full update, when dense. */
  public Optional<NDArray> dense() {
    return Optional.ofNullable(dense);
  }
}

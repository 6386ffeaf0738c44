package dev.loramerge.merge.spi;

import ai.djl.ndarray.NDArray;
import dev.loramerge.LoraModule;

/**
 * One adapter's factors for the module being merged, with its effective weight.
 *
 * <p>{@link #weight()} is the user's weight for the adapter times its block weight for this
 * module; {@link #scale()} is the module's own α/r (or α/√r). {@link #down()} (r×in·k·k) and
 * {@link #up()} (out×r) are float32 arrays owned by the module's manager; an algorithm must not
 * modify them in place.
 */
public interface ModuleInput {
  /** The adapter's position among the merge's inputs (0-based), for seeding. */
  int index();

  /** The module as read. */
  LoraModule module();

  /** User weight × block weight. */
  double weight();

  /** The module's scale s. */
  double scale();

  /** A, flattened to 2-D, float32. */
  NDArray down();

  /** B, 2-D, float32. */
  NDArray up();

  /**
   * A's values in float32, r×in·k·k row-major, in a new array the caller owns: methods that work
   * element by element are several times faster on these than through NDArray operations.
   */
  float[] downValues();

  /** B's values in float32, out×r row-major, in a new array the caller owns. */
  float[] upValues();

  /**
   * A's values {@code [first, first + count)} (row-major) in float32 into {@code out[0, count)}:
   * for methods that work a block at a time and need no copy of the whole factor.
   */
  default void readDown(int first, float[] out, int count) {
    System.arraycopy(downValues(), first, out, 0, count);
  }

  /** B's values {@code [first, first + count)} (row-major) in float32 into {@code out[0, count)}. */
  default void readUp(int first, float[] out, int count) {
    System.arraycopy(upValues(), first, out, 0, count);
  }

  /** The full update s·B·A (out×in·k·k), float32, computed on first use. */
  NDArray delta();

  /**
   * The full update's values in float32, out×in·k·k row-major, in a new array the caller owns:
   * the same values as {@link #delta()}, without keeping the native array.
   */
  float[] deltaValues();
}

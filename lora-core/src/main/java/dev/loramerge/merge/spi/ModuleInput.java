package dev.loramerge.merge.spi;

import dev.loramerge.LoraModule;

/**
 * One adapter's factors for the module being merged, with its effective weight.
 *
 * <p>{@link #weight()} is the user's weight for the adapter times its block weight for this
 * module; {@link #scale()} is the module's own α/r (or α/√r). The factors are read a block at a
 * time at the precision the caller asks for, by the type of the array it reads into: float32
 * values are the stored values rounded where they are wider (float64 adapters), float64 values
 * are exact. B is out×r and A r×in·k·k (a convolution's A flattened), both row-major. Reading a
 * whole factor is reading the block {@code [0, numel)}; a method that works a block at a time
 * needs no copy of the whole factor.
 *
 * <p>A method that {@linkplain dev.loramerge.merge.MergeAlgorithm.Requirements#fullUpdates reads
 * only full updates} may also be handed a module without LoRA factors (a LoHa, a LoKr, a full
 * difference, a DoRA module on the merger's base weights): its {@link #delta()} is the
 * materialised update, and reading its factors throws {@link IllegalStateException}.
 */
public interface ModuleInput {
  /** The adapter's position among the merge's inputs (0-based), for seeding. */
  int index();

  /** The module as read: its shapes, rank, type and scale. */
  LoraModule module();

  /** User weight × block weight. */
  double weight();

  /** The module's scale s. */
  default double scale() {
    return module().scale();
  }

  /** B's values {@code [first, first + count)} in float32 into {@code out[0, count)}. */
  void readUp(int first, float[] out, int count);

  /** A's values {@code [first, first + count)} in float32 into {@code out[0, count)}. */
  void readDown(int first, float[] out, int count);

  /** B's values {@code [first, first + count)} in float64, exactly, into {@code out[0, count)}. */
  void readUp(int first, double[] out, int count);

  /** A's values {@code [first, first + count)} in float64, exactly, into {@code out[0, count)}. */
  void readDown(int first, double[] out, int count);

  /**
   * The full update s·B·A (out×in·k·k, row-major) in float32, in a new array the caller owns, as
   * PEFT computes it, (B·A)·s: for methods that work on full updates. For a module without LoRA
   * factors, its update ΔW computed in float64 and rounded once to float32; a DoRA module's is
   * DoRA(W) − W on the base weights with its weight inside the norm, and its {@link #weight()} is
   * then 1.
   */
  float[] delta();
}

package dev.loramerge.algorithms;

/**
 * PEFT's {@code magnitude_prune} on the factors: each adapter's A and B pruned to the {@code
 * density} largest magnitudes, then a weighted sum.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class MagnitudePrune extends PeftMethod {
  private MagnitudePrune(double density) {
    super("magnitude_prune", Space.FACTORS, Pruning.MAGNITUDE, Combination.SUM, density, MajoritySign.TOTAL, 0);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]). */
  public static MagnitudePrune of(double density) {
    return new MagnitudePrune(density);
  }
}

package dev.loramerge.algorithms;

/**
 * PEFT's {@code dare_linear} on the factors: each adapter's A and B keep each entry with
 * probability {@code density} (the fraction <em>kept</em>), the kept ones divided by it, then a
 * weighted sum (Yu et al. 2023). {@link Dare#of(double)} takes the drop rate instead: {@code
 * Dare.of(0.3)} is {@code DareLinear.of(0.7)}.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class DareLinear extends PeftMethod {
  private DareLinear(double density, long seed) {
    super("dare_linear", Space.FACTORS, Pruning.RANDOM, Combination.SUM, density, MajoritySign.TOTAL, seed);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]) and seed 0. */
  public static DareLinear of(double density) {
    return new DareLinear(density, 0);
  }

  /** This method drawing its masks from {@code seed}. */
  public DareLinear withSeed(long seed) {
    return new DareLinear(density(), seed);
  }
}

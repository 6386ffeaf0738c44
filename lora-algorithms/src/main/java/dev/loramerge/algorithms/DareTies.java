package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

/**
 * PEFT's {@code dare_ties} on the factors: DARE's random pruning with rescale, then TIES' sign
 * election and disjoint mean. {@code density} is the fraction kept; {@link Dare#ties(double)}
 * takes the drop rate.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class DareTies extends PeftMethod {
  private DareTies(double density, MajoritySign majoritySign, long seed) {
    super("dare_ties", Space.FACTORS, Pruning.RANDOM, Combination.TIES, density, majoritySign, seed);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]), majority sign total and seed 0. */
  public static DareTies of(double density) {
    return new DareTies(density, MajoritySign.TOTAL, 0);
  }

  /** This method electing signs by {@code majoritySign}. */
  public DareTies withMajoritySign(MajoritySign majoritySign) {
    checkNotNull(majoritySign, "majoritySign");
    return new DareTies(density(), majoritySign, seed());
  }

  /** This method drawing its masks from {@code seed}. */
  public DareTies withSeed(long seed) {
    return new DareTies(density(), majoritySign(), seed);
  }
}

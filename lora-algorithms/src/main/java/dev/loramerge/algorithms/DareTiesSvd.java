package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

/**
 * PEFT's {@code dare_ties_svd}: DARE then TIES on the full updates, re-ranked by SVD. Ranks may
 * differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class DareTiesSvd extends PeftMethod {
  private DareTiesSvd(double density, MajoritySign majoritySign, long seed) {
    super("dare_ties_svd", Space.DELTAS, Pruning.RANDOM, Combination.TIES, density, majoritySign, seed);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]), majority sign total and seed 0. */
  public static DareTiesSvd of(double density) {
    return new DareTiesSvd(density, MajoritySign.TOTAL, 0);
  }

  /** This method electing signs by {@code majoritySign}. */
  public DareTiesSvd withMajoritySign(MajoritySign majoritySign) {
    checkNotNull(majoritySign, "majoritySign");
    return new DareTiesSvd(density(), majoritySign, seed());
  }

  /** This method drawing its masks from {@code seed}. */
  public DareTiesSvd withSeed(long seed) {
    return new DareTiesSvd(density(), majoritySign(), seed);
  }
}

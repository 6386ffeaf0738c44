package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

/**
 * DELLA (Deep et al. 2024), as mergekit applies it, on each adapter's full update sᵢ·BᵢAᵢ: in
 * each row, entries are kept with probability rising with their magnitude rank from {@code
 * density − epsilon} to {@code density + epsilon} and rescaled by 1/p; then TIES' sign election
 * and disjoint mean (as {@link Ties}), and re-ranking by SVD. Ranks may differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Della extends PeftMethod {
  /** mergekit's default spread. */
  public static final double DEFAULT_EPSILON = 0.15;

  private Della(double density, double epsilon, MajoritySign majoritySign, long seed) {
    super("della", Space.DELTAS, Pruning.DELLA, Combination.TIES, density, majoritySign, seed, 0, epsilon);
  }

  /** Keeps {@code density} of the entries on average, epsilon {@value #DEFAULT_EPSILON} (capped so probabilities stay in [0, 1]), seed 0. */
  public static Della of(double density) {
    return new Della(density, Math.min(DEFAULT_EPSILON, Math.min(density, 1 - density)), MajoritySign.TOTAL, 0);
  }

  /** This method with keep probabilities spread by ± {@code epsilon}. */
  public Della withEpsilon(double epsilon) {
    return new Della(density(), epsilon, majoritySign(), seed());
  }

  /** This method electing signs by {@code majoritySign}. */
  public Della withMajoritySign(MajoritySign majoritySign) {
    checkNotNull(majoritySign, "majoritySign");
    return new Della(density(), epsilon(), majoritySign, seed());
  }

  /** This method drawing its masks from {@code seed}. */
  public Della withSeed(long seed) {
    return new Della(density(), epsilon(), majoritySign(), seed);
  }

  /** The spread of keep probabilities. */
  @Override
  public double epsilon() {
    return super.epsilon();
  }
}

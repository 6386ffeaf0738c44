package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

/**
 * PEFT's {@code ties} on the factors: each adapter's A and B pruned to the {@code density}
 * largest magnitudes, signs elected per entry, agreeing entries averaged (Yadav et al. 2023).
 * All ranks must be equal; the result has cross terms BᵢAⱼ, as PEFT's has.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Ties extends PeftMethod {
  private Ties(double density, MajoritySign majoritySign) {
    super("ties", Space.FACTORS, Pruning.MAGNITUDE, Combination.TIES, density, majoritySign, 0);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]), majority sign total. */
  public static Ties of(double density) {
    return new Ties(density, MajoritySign.TOTAL);
  }

  /** This method electing signs by {@code majoritySign}. */
  public Ties withMajoritySign(MajoritySign majoritySign) {
    checkNotNull(majoritySign, "majoritySign");
    return new Ties(density(), majoritySign);
  }
}

package dev.loramerge.algorithms;

/**
 * PEFT's {@code dare_linear_svd}: DARE on the full updates sᵢ·BᵢAᵢ ({@code density} kept),
 * weighted sum, re-ranked by SVD. Ranks may differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class DareLinearSvd extends PeftMethod {
  private DareLinearSvd(double density, long seed) {
    super("dare_linear_svd", Space.DELTAS, Pruning.RANDOM, Combination.SUM, density, MajoritySign.TOTAL, seed);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]) and seed 0. */
  public static DareLinearSvd of(double density) {
    return new DareLinearSvd(density, 0);
  }

  /** This method drawing its masks from {@code seed}. */
  public DareLinearSvd withSeed(long seed) {
    return new DareLinearSvd(density(), seed);
  }
}

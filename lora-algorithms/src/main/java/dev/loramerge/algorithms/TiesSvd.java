package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

/**
 * PEFT's {@code ties_svd}: TIES on the full updates sᵢ·BᵢAᵢ (weights wᵢ), re-ranked by SVD to the
 * target rank. Ranks may differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class TiesSvd extends PeftMethod {
  private TiesSvd(double density, MajoritySign majoritySign) {
    super("ties_svd", Space.DELTAS, Pruning.MAGNITUDE, Combination.TIES, density, majoritySign, 0);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]), majority sign total. */
  public static TiesSvd of(double density) {
    return new TiesSvd(density, MajoritySign.TOTAL);
  }

  /** This method electing signs by {@code majoritySign}. */
  public TiesSvd withMajoritySign(MajoritySign majoritySign) {
    checkNotNull(majoritySign, "majoritySign");
    return new TiesSvd(density(), majoritySign);
  }
}

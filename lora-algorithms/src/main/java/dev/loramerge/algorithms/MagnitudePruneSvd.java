package dev.loramerge.algorithms;

/**
 * PEFT's {@code magnitude_prune_svd}: the full updates pruned to the {@code density} largest
 * magnitudes, weighted sum, re-ranked by SVD. Ranks may differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class MagnitudePruneSvd extends PeftMethod {
  private MagnitudePruneSvd(double density) {
    super("magnitude_prune_svd", Space.DELTAS, Pruning.MAGNITUDE, Combination.SUM, density, MajoritySign.TOTAL, 0);
  }

  /** The method with {@code density} (the fraction of entries kept, in (0, 1]). */
  public static MagnitudePruneSvd of(double density) {
    return new MagnitudePruneSvd(density);
  }
}

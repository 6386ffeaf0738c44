package dev.loramerge.algorithms;

/**
 * Model Breadcrumbs (Davari and Belilovsky 2023), as mergekit applies it, on each adapter's full
 * update sᵢ·BᵢAᵢ: drop the {@code gamma} fraction of largest-magnitude entries as outliers, keep
 * the next {@code density} fraction, sum weighted by wᵢ, and re-rank by SVD. Ranks may differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Breadcrumbs extends PeftMethod {
  /** mergekit's default outlier fraction. */
  public static final double DEFAULT_GAMMA = 0.01;

  private Breadcrumbs(double density, double gamma) {
    super("breadcrumbs", Space.DELTAS, Pruning.BREADCRUMBS, Combination.SUM, density, MajoritySign.TOTAL, 0, gamma, 0);
  }

  /** Keeps {@code density} of the entries after dropping the top {@value #DEFAULT_GAMMA}. */
  public static Breadcrumbs of(double density) {
    return new Breadcrumbs(density, DEFAULT_GAMMA);
  }

  /** This method dropping the top {@code gamma} fraction as outliers. */
  public Breadcrumbs withGamma(double gamma) {
    return new Breadcrumbs(density(), gamma);
  }

  /** The outlier fraction dropped. */
  @Override
  public double gamma() {
    return super.gamma();
  }
}

package dev.loramerge.merge;

import static com.google.common.base.Preconditions.checkArgument;

import dev.loramerge.internal.select.MagnitudeSelect;
import java.util.Locale;

/**
 * Pruning of a merge's result (the guides' {@code prune_merge}): each merged factor's entries
 * below an absolute threshold, or outside the {@code density} fraction of largest magnitudes, are
 * set to zero. Applied after the method and any re-ranking, to B' and A' separately.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class PostPrune {
  private final boolean byDensity;
  private final double value;

  private PostPrune(boolean byDensity, double value) {
    this.byDensity = byDensity;
    this.value = value;
  }

  /** Zero every entry with |x| below {@code threshold}. */
  public static PostPrune threshold(double threshold) {
    checkArgument(threshold >= 0 && Double.isFinite(threshold), "prune threshold must be ≥ 0, got %s", threshold);
    return new PostPrune(false, threshold);
  }

  /** Keep the ⌊density·n⌋ entries of largest magnitude of each factor. */
  public static PostPrune density(double density) {
    checkArgument(density > 0 && density <= 1, "prune density must be in (0, 1], got %s", density);
    return new PostPrune(true, density);
  }

  /**
   * Prunes {@code values} in place. By density, the kept entries are the largest magnitudes, of
   * equal ones the first, and the rest become +0; a factor holding NaN is left as it is, for the
   * merge to report rather than prune away.
   */
  void apply(float[] values) {
    if (byDensity) {
      if (!hasNaN(values)) {
        MagnitudeSelect.keepLargest(values, (int) (value * values.length));
      }
      return;
    }
    for (int i = 0; i < values.length; i++) {
      if (Math.abs(values[i]) < value) {
        values[i] = 0;
      }
    }
  }

  private static boolean hasNaN(float[] values) {
    for (float value : values) {
      if (value != value) {
        return true;
      }
    }
    return false;
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof PostPrune
        && ((PostPrune) other).byDensity == byDensity
        && Double.compare(((PostPrune) other).value, value) == 0;
  }

  @Override
  public int hashCode() {
    return Boolean.hashCode(byDensity) * 31 + Double.hashCode(value);
  }

  /** {@code density=0.5} or {@code threshold=1.0E-4}, as recorded in recipes. */
  @Override
  public String toString() {
    return String.format(Locale.ROOT, "%s=%s", byDensity ? "density" : "threshold", value);
  }
}

package dev.loramerge.merge;

import static com.google.common.base.Preconditions.checkArgument;

import java.util.Arrays;
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

  /** Prunes {@code values} in place. */
  void apply(float[] values) {
    double limit = value;
    if (byDensity) {
      int keep = (int) (value * values.length);
      if (keep >= values.length) {
        return;
      }
      float[] magnitudes = new float[values.length];
      for (int i = 0; i < values.length; i++) {
        magnitudes[i] = Math.abs(values[i]);
      }
      Arrays.sort(magnitudes);
      limit = keep == 0 ? Double.POSITIVE_INFINITY : magnitudes[values.length - keep];
      int kept = 0;
      for (int i = 0; i < values.length; i++) {
        if (Math.abs(values[i]) > limit) {
          kept++;
        }
      }
      int ties = keep - kept;
      for (int i = 0; i < values.length; i++) {
        float magnitude = Math.abs(values[i]);
        if (magnitude == limit && ties > 0) {
          ties--;
        } else if (magnitude <= limit) {
          values[i] = 0;
        }
      }
      return;
    }
    for (int i = 0; i < values.length; i++) {
      if (Math.abs(values[i]) < limit) {
        values[i] = 0;
      }
    }
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

package dev.loramerge.merge;

import static com.google.common.base.Preconditions.checkArgument;

import java.util.Locale;

/**
 * How a re-ranked module's rank is chosen from its singular values S (descending), capped at the
 * merge's target rank: fixed, or dynamically as kohya's {@code resize_lora} does.
 *
 * <ul>
 *   <li>{@code sv_ratio} p: keep the values above S₀/p;
 *   <li>{@code sv_cumulative} p: keep values until their running sum reaches p·ΣS;
 *   <li>{@code sv_fro} p: keep values until the retained Frobenius norm reaches p·‖S‖.
 * </ul>
 *
 * Each dynamic count is clamped to [1, n − 1] and then incremented, exactly as kohya computes it
 * (n is the number of singular values the factored SVD has, the stacked rank).
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class RankRule {
  /** kohya's {@code --dynamic_method}. */
  public enum Method {
    FIXED,
    SV_RATIO,
    SV_CUMULATIVE,
    SV_FRO
  }

  private static final RankRule FIXED = new RankRule(Method.FIXED, 0);

  private final Method method;
  private final double parameter;

  private RankRule(Method method, double parameter) {
    this.method = method;
    this.parameter = parameter;
  }

  /** The target rank itself. */
  public static RankRule fixed() {
    return FIXED;
  }

  /** Singular values above the largest / {@code ratio} (kohya {@code sv_ratio}). */
  public static RankRule svRatio(double ratio) {
    checkArgument(ratio >= 1 && Double.isFinite(ratio), "sv_ratio must be at least 1, got %s", ratio);
    return new RankRule(Method.SV_RATIO, ratio);
  }

  /** Enough values for a {@code fraction} of their sum (kohya {@code sv_cumulative}). */
  public static RankRule svCumulative(double fraction) {
    checkArgument(fraction > 0 && fraction <= 1, "sv_cumulative must be in (0, 1], got %s", fraction);
    return new RankRule(Method.SV_CUMULATIVE, fraction);
  }

  /** Enough values for a {@code fraction} of the Frobenius norm (kohya {@code sv_fro}). */
  public static RankRule svFro(double fraction) {
    checkArgument(fraction > 0 && fraction <= 1, "sv_fro must be in (0, 1], got %s", fraction);
    return new RankRule(Method.SV_FRO, fraction);
  }

  /** The rule named as kohya names it ({@code sv_ratio}, {@code sv_cumulative}, {@code sv_fro}). */
  public static RankRule named(String method, double parameter) {
    switch (method.toLowerCase(Locale.ROOT)) {
      case "sv_ratio":
        return svRatio(parameter);
      case "sv_cumulative":
        return svCumulative(parameter);
      case "sv_fro":
        return svFro(parameter);
      default:
        throw new IllegalArgumentException(
            "unknown dynamic rank method '" + method + "'; expected sv_ratio, sv_cumulative or sv_fro");
    }
  }

  /** The method. */
  public Method method() {
    return method;
  }

  /** The ratio or fraction (0 for fixed). */
  public double parameter() {
    return parameter;
  }

  /** The rank for singular values {@code sigma} (descending), capped at {@code cap}. */
  public int rank(double[] sigma, int cap) {
    if (method == Method.FIXED) {
      return cap;
    }
    if (sigma.length == 0 || sigma[0] <= 1e-6) {
      return 1;
    }
    int index;
    switch (method) {
      case SV_RATIO:
        index = 0;
        for (double value : sigma) {
          if (value > sigma[0] / parameter) {
            index++;
          }
        }
        break;
      case SV_CUMULATIVE:
        index = searchSorted(cumulative(sigma, false), parameter) + 1;
        break;
      case SV_FRO:
        index = searchSorted(cumulative(sigma, true), parameter * parameter) + 1;
        break;
      default:
        throw new AssertionError(method);
    }
    index = Math.max(1, Math.min(index, sigma.length - 1));
    return Math.min(index + 1, cap);
  }

  /** Running sums of S (or S²) divided by the total. */
  private static double[] cumulative(double[] sigma, boolean squared) {
    double[] sums = new double[sigma.length];
    double total = 0;
    for (int i = 0; i < sigma.length; i++) {
      total += squared ? sigma[i] * sigma[i] : Math.abs(sigma[i]);
      sums[i] = total;
    }
    for (int i = 0; i < sums.length; i++) {
      sums[i] /= total;
    }
    return sums;
  }

  /** The number of entries below {@code value} (torch.searchsorted, left). */
  private static int searchSorted(double[] sorted, double value) {
    int count = 0;
    while (count < sorted.length && sorted[count] < value) {
      count++;
    }
    return count;
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof RankRule
        && ((RankRule) other).method == method
        && Double.compare(((RankRule) other).parameter, parameter) == 0;
  }

  @Override
  public int hashCode() {
    return method.hashCode() * 31 + Double.hashCode(parameter);
  }

  @Override
  public String toString() {
    return method == Method.FIXED
        ? "fixed"
        : method.name().toLowerCase(Locale.ROOT) + "=" + parameter;
  }
}

package dev.loramerge.algorithms;

/**
 * DARE as the guides name it: by the <em>drop rate</em> p. {@code Dare.of(0.3)} drops 30 % of
 * each update's entries and rescales the rest by 1/(1 − p): it is PEFT's {@code dare_linear} at
 * density 0.7, i.e. {@code DareLinear.of(0.7)}. PEFT's names ({@link DareLinear}, {@link
 * DareTies}) take the density, the fraction kept; the objects these factories return print both.
 */
public final class Dare {
  private Dare() {}

  /** {@link DareLinear} dropping {@code dropRate} of the entries (density 1 − dropRate). */
  public static DareLinear of(double dropRate) {
    return DareLinear.of(TaskVectors.densityFor(dropRate));
  }

  /** {@link DareTies} dropping {@code dropRate} of the entries (density 1 − dropRate). */
  public static DareTies ties(double dropRate) {
    return DareTies.of(TaskVectors.densityFor(dropRate));
  }
}

package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import dev.loramerge.merge.MergeAlgorithm;
import java.util.Locale;
import java.util.OptionalDouble;

/**
 * The methods by the names users type: PEFT's combination types ({@code cat}, {@code linear},
 * {@code svd}, {@code ties}, {@code ties_svd}, {@code dare_linear}, {@code dare_ties}, {@code
 * dare_linear_svd}, {@code dare_ties_svd}, {@code magnitude_prune}, {@code
 * magnitude_prune_svd}) and {@code add_difference} (A + (B − C) with the weights given: use
 * weights 1, f, f for A + f·(B − C)), {@code breadcrumbs}, {@code della}.
 */
public final class MergeMethods {
  /** Every name {@link #named} accepts, in PEFT's order. */
  public static final ImmutableList<String> NAMES =
      ImmutableList.of(
          "cat",
          "linear",
          "svd",
          "ties",
          "ties_svd",
          "dare_linear",
          "dare_ties",
          "dare_linear_svd",
          "dare_ties_svd",
          "magnitude_prune",
          "magnitude_prune_svd",
          "add_difference",
          "breadcrumbs",
          "della");

  private MergeMethods() {}

  /**
   * The method called {@code name} with these parameters.
   *
   * @param density the fraction kept, required by the pruning methods and ignored by the others
   * @throws IllegalArgumentException for an unknown name or a missing density
   */
  public static MergeAlgorithm named(String name, OptionalDouble density, MajoritySign majoritySign, long seed) {
    checkNotNull(name, "name");
    checkNotNull(majoritySign, "majoritySign");
    String key = name.toLowerCase(Locale.ROOT);
    switch (key) {
      case "cat":
        return Cat.of();
      case "linear":
        return Linear.of();
      case "svd":
        return Svd.of();
      case "add_difference":
        return AddDifference.of(1);
      default:
        break;
    }
    checkArgument(NAMES.contains(key), "unknown merge method '%s'; expected one of %s", name, String.join(", ", NAMES));
    checkArgument(density.isPresent(), "%s needs a density (the fraction of entries kept, in (0, 1])", key);
    double d = density.getAsDouble();
    switch (key) {
      case "ties":
        return Ties.of(d).withMajoritySign(majoritySign);
      case "ties_svd":
        return Ties.of(d).withMajoritySign(majoritySign).onUpdates();
      case "dare_linear":
        return DareLinear.of(d).withSeed(seed);
      case "dare_ties":
        return DareTies.of(d).withMajoritySign(majoritySign).withSeed(seed);
      case "dare_linear_svd":
        return DareLinear.of(d).withSeed(seed).onUpdates();
      case "dare_ties_svd":
        return DareTies.of(d).withMajoritySign(majoritySign).withSeed(seed).onUpdates();
      case "magnitude_prune":
        return MagnitudePrune.of(d);
      case "magnitude_prune_svd":
        return MagnitudePrune.of(d).onUpdates();
      case "breadcrumbs":
        return Breadcrumbs.of(d);
      case "della":
        return Della.of(d).withMajoritySign(majoritySign).withSeed(seed);
      default:
        throw new AssertionError(key);
    }
  }
}

package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import dev.loramerge.merge.MergeAlgorithm;
import java.util.Arrays;
import java.util.Locale;
import java.util.Optional;
import java.util.OptionalDouble;

/**
 * Every merge method by the name users type, in the order the command's help and the README's
 * table list them: PEFT's combination types, then {@code add_difference} (A + (B − C) with the
 * weights given: use weights 1, f, f for A + f·(B − C)), {@code breadcrumbs} and {@code della}.
 */
public enum MergeMethod {
  CAT("cat", true, false, (density, sign, seed) -> Cat.of()),
  LINEAR("linear", true, false, (density, sign, seed) -> Linear.of()),
  SVD("svd", true, false, (density, sign, seed) -> Svd.of()),
  TIES("ties", true, true, (density, sign, seed) -> Ties.of(density).withMajoritySign(sign)),
  TIES_SVD("ties_svd", true, true, (density, sign, seed) -> Ties.of(density).withMajoritySign(sign).onUpdates()),
  DARE_LINEAR("dare_linear", true, true, (density, sign, seed) -> DareLinear.of(density).withSeed(seed)),
  DARE_TIES(
      "dare_ties", true, true, (density, sign, seed) -> DareTies.of(density).withMajoritySign(sign).withSeed(seed)),
  DARE_LINEAR_SVD(
      "dare_linear_svd", true, true, (density, sign, seed) -> DareLinear.of(density).withSeed(seed).onUpdates()),
  DARE_TIES_SVD(
      "dare_ties_svd", true, true,
      (density, sign, seed) -> DareTies.of(density).withMajoritySign(sign).withSeed(seed).onUpdates()),
  MAGNITUDE_PRUNE("magnitude_prune", true, true, (density, sign, seed) -> MagnitudePrune.of(density)),
  MAGNITUDE_PRUNE_SVD(
      "magnitude_prune_svd", true, true, (density, sign, seed) -> MagnitudePrune.of(density).onUpdates()),
  ADD_DIFFERENCE("add_difference", false, false, (density, sign, seed) -> AddDifference.of(1)),
  BREADCRUMBS("breadcrumbs", false, true, (density, sign, seed) -> Breadcrumbs.of(density)),
  DELLA("della", false, true, (density, sign, seed) -> Della.of(density).withMajoritySign(sign).withSeed(seed));

  /** Makes the method from the settings the command has; those it has no use for are ignored. */
  private interface Factory {
    MergeAlgorithm create(double density, MajoritySign majoritySign, long seed);
  }

  private static final ImmutableList<String> NAMES =
      Arrays.stream(values()).map(MergeMethod::methodName).collect(ImmutableList.toImmutableList());

  private final String methodName;
  private final boolean peft;
  private final boolean pruning;
  private final Factory factory;

  MergeMethod(String methodName, boolean peft, boolean pruning, Factory factory) {
    this.methodName = methodName;
    this.peft = peft;
    this.pruning = pruning;
    this.factory = factory;
  }

  /** Every method's name, in order. */
  public static ImmutableList<String> names() {
    return NAMES;
  }

  /** The method called {@code name}, in any case. */
  public static Optional<MergeMethod> named(String name) {
    checkNotNull(name, "name");
    String key = name.toLowerCase(Locale.ROOT);
    return Arrays.stream(values()).filter(method -> method.methodName.equals(key)).findFirst();
  }

  /**
   * The method called {@code name}, in any case.
   *
   * @throws IllegalArgumentException for an unknown name
   */
  public static MergeMethod parse(String name) {
    return named(name)
        .orElseThrow(
            () -> new IllegalArgumentException(
                String.format(Locale.ROOT, "unknown merge method '%s'; expected one of %s", name, String.join(", ", NAMES))));
  }

  /** The name users type, as the recipe records it: PEFT's combination type or the method's own. */
  public String methodName() {
    return methodName;
  }

  /** Whether the method is one of PEFT's {@code add_weighted_adapter} combination types. */
  public boolean inPeft() {
    return peft;
  }

  /** Whether the method prunes, and so needs a density. */
  public boolean needsDensity() {
    return pruning;
  }

  /**
   * The method with these settings; each method takes those it has (a density where it {@link
   * #needsDensity prunes}, the majority sign where it elects signs, the seed where it draws).
   *
   * @throws IllegalArgumentException for a missing or invalid density
   */
  public MergeAlgorithm create(OptionalDouble density, MajoritySign majoritySign, long seed) {
    checkNotNull(density, "density");
    checkNotNull(majoritySign, "majoritySign");
    checkArgument(!pruning || density.isPresent(), "%s needs a density (the fraction of entries kept, in (0, 1])", methodName);
    return factory.create(density.orElse(1), majoritySign, seed);
  }

  @Override
  public String toString() {
    return methodName;
  }
}

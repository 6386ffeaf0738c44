package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * DELLA (Deep et al. 2024), as mergekit applies it, on each adapter's full update sᵢ·BᵢAᵢ: in
 * each row, entries are kept with probability rising with their magnitude rank from {@code
 * density − epsilon} to {@code density + epsilon} and rescaled by 1/p; then TIES' sign election
 * and disjoint mean (as {@link Ties}), and re-ranking by SVD. Ranks may differ.
 *
 * @param density the fraction of entries kept on average, in (0, 1]
 * @param epsilon the spread of keep probabilities, with density ± epsilon within [0, 1]
 * @param majoritySign how signs are elected
 * @param seed the seed of the random masks
 */
public record Della(double density, double epsilon, MajoritySign majoritySign, long seed) implements MergeAlgorithm {
  /** mergekit's default spread. */
  public static final double DEFAULT_EPSILON = 0.15;

  /** Checks the parameters. */
  public Della {
    TaskVectors.checkDensity(density);
    checkArgument(epsilon >= 0 && epsilon <= density && density + epsilon <= 1,
        "epsilon must keep density ± epsilon within [0, 1], got density %s and epsilon %s", density, epsilon);
    checkNotNull(majoritySign, "majoritySign");
  }

  /**
   * Keeps {@code density} of the entries on average, epsilon {@value #DEFAULT_EPSILON} (capped so
   * probabilities stay in [0, 1]), majority sign total, seed 0.
   */
  public static Della of(double density) {
    return new Della(density, Math.min(DEFAULT_EPSILON, Math.min(density, 1 - density)), MajoritySign.TOTAL, 0);
  }

  /** This method with keep probabilities spread by ± {@code epsilon}. */
  public Della withEpsilon(double epsilon) {
    return new Della(density, epsilon, majoritySign, seed);
  }

  /** This method electing signs by {@code majoritySign}. */
  public Della withMajoritySign(MajoritySign majoritySign) {
    return new Della(density, epsilon, majoritySign, seed);
  }

  /** This method drawing its masks from {@code seed}. */
  public Della withSeed(long seed) {
    return new Della(density, epsilon, majoritySign, seed);
  }

  @Override
  public String name() {
    return "della";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of(
        "density", density, "majority_sign_method", majoritySign.peftName(), "epsilon", epsilon, "seed", seed);
  }

  @Override
  public Requirements requirements() {
    return TaskVectors.requirements(Space.UPDATES);
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    return taskVectors().merge(module, name());
  }

  @Override
  public Optional<TaskArithmetic> taskArithmetic() {
    return taskVectors().arithmetic();
  }

  private TaskVectors taskVectors() {
    return new TaskVectors(Space.UPDATES, new Pruning.RankedRandom(density, epsilon, seed), new Combination.ElectedSign(majoritySign));
  }

  @Override
  public String toString() {
    return "Della{density=" + density + ", epsilon=" + epsilon + ", majoritySign=" + majoritySign.peftName()
        + ", seed=" + seed + "}";
  }
}

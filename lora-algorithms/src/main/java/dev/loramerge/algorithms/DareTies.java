package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * DARE's random pruning with rescale, then TIES' sign election and disjoint mean: PEFT's {@code
 * dare_ties} on the factors ({@code DareTies.of(d)}, all ranks equal), {@code dare_ties_svd} on
 * the full updates ({@code DareTies.of(d).onUpdates()}, re-ranked). {@link Dare#ties(double)}
 * takes the drop rate.
 *
 * @param density the fraction of entries kept, in (0, 1]
 * @param majoritySign how signs are elected
 * @param seed the seed of the random masks
 * @param space where the method works
 */
public record DareTies(double density, MajoritySign majoritySign, long seed, Space space) implements MergeAlgorithm {
  /** Checks the parameters. */
  public DareTies {
    TaskVectors.checkDensity(density);
    checkNotNull(majoritySign, "majoritySign");
    checkNotNull(space, "space");
  }

  /** {@code dare_ties} with {@code density}, majority sign total and seed 0. */
  public static DareTies of(double density) {
    return new DareTies(density, MajoritySign.TOTAL, 0, Space.FACTORS);
  }

  /** This method electing signs by {@code majoritySign}. */
  public DareTies withMajoritySign(MajoritySign majoritySign) {
    return new DareTies(density, majoritySign, seed, space);
  }

  /** This method drawing its masks from {@code seed}. */
  public DareTies withSeed(long seed) {
    return new DareTies(density, majoritySign, seed, space);
  }

  /** This method on the full updates, re-ranked: {@code dare_ties_svd}. */
  public DareTies onUpdates() {
    return new DareTies(density, majoritySign, seed, Space.UPDATES);
  }

  /** {@link #onUpdates()} for the method on the factors; empty for the one on the full updates. */
  @Override
  public Optional<MergeAlgorithm> onFullUpdates() {
    return space == Space.FACTORS ? Optional.of(onUpdates()) : Optional.empty();
  }

  @Override
  public String name() {
    return space.methodName("dare_ties");
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("density", density, "majority_sign_method", majoritySign.peftName(), "seed", seed);
  }

  @Override
  public Requirements requirements() {
    return TaskVectors.requirements(space);
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
    return new TaskVectors(space, new Pruning.Random(density, seed), new Combination.ElectedSign(majoritySign));
  }

  @Override
  public String toString() {
    return "DareTies{density=" + density + ", dropRate=" + TaskVectors.dropRate(density) + ", majoritySign="
        + majoritySign.peftName() + ", seed=" + seed + ", space=" + space + "}";
  }
}

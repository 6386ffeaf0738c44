package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * DARE (Yu et al. 2023) with a weighted sum: each task tensor keeps each entry with probability
 * {@code density} (the fraction <em>kept</em>), the kept ones divided by it. PEFT's {@code
 * dare_linear} on the factors ({@code DareLinear.of(d)}, all ranks equal), {@code
 * dare_linear_svd} on the full updates ({@code DareLinear.of(d).onUpdates()}, re-ranked). {@link
 * Dare#of(double)} takes the drop rate instead: {@code Dare.of(0.3)} is {@code
 * DareLinear.of(0.7)}.
 *
 * @param density the fraction of entries kept, in (0, 1]
 * @param seed the seed of the random masks
 * @param space where the method works
 */
public record DareLinear(double density, long seed, Space space) implements MergeAlgorithm {
  /** Checks the parameters. */
  public DareLinear {
    TaskVectors.checkDensity(density);
    checkNotNull(space, "space");
  }

  /** {@code dare_linear} with {@code density} and seed 0. */
  public static DareLinear of(double density) {
    return new DareLinear(density, 0, Space.FACTORS);
  }

  /** This method drawing its masks from {@code seed}. */
  public DareLinear withSeed(long seed) {
    return new DareLinear(density, seed, space);
  }

  /** This method on the full updates, re-ranked: {@code dare_linear_svd}. */
  public DareLinear onUpdates() {
    return new DareLinear(density, seed, Space.UPDATES);
  }

  /** {@link #onUpdates()} for the method on the factors; empty for the one on the full updates. */
  @Override
  public Optional<MergeAlgorithm> onFullUpdates() {
    return space == Space.FACTORS ? Optional.of(onUpdates()) : Optional.empty();
  }

  @Override
  public String name() {
    return space.methodName("dare_linear");
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("density", density, "seed", seed);
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
    return new TaskVectors(space, new Pruning.Random(density, seed), new Combination.Sum());
  }

  @Override
  public String toString() {
    return "DareLinear{density=" + density + ", dropRate=" + TaskVectors.dropRate(density) + ", seed=" + seed
        + ", space=" + space + "}";
  }
}

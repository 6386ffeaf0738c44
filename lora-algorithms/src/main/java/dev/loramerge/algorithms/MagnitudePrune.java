package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * Each task tensor pruned to the {@code density} largest magnitudes, then a weighted sum: PEFT's
 * {@code magnitude_prune} on the factors ({@code MagnitudePrune.of(d)}, all ranks equal), {@code
 * magnitude_prune_svd} on the full updates ({@code MagnitudePrune.of(d).onUpdates()}, re-ranked).
 *
 * @param density the fraction of entries kept, in (0, 1]
 * @param space where the method works
 */
public record MagnitudePrune(double density, Space space) implements MergeAlgorithm {
  /** Checks the parameters. */
  public MagnitudePrune {
    TaskVectors.checkDensity(density);
    checkNotNull(space, "space");
  }

  /** {@code magnitude_prune} with {@code density}. */
  public static MagnitudePrune of(double density) {
    return new MagnitudePrune(density, Space.FACTORS);
  }

  /** This method on the full updates, re-ranked: {@code magnitude_prune_svd}. */
  public MagnitudePrune onUpdates() {
    return new MagnitudePrune(density, Space.UPDATES);
  }

  /** {@link #onUpdates()} for the method on the factors; empty for the one on the full updates. */
  @Override
  public Optional<MergeAlgorithm> onFullUpdates() {
    return space == Space.FACTORS ? Optional.of(onUpdates()) : Optional.empty();
  }

  @Override
  public String name() {
    return space.methodName("magnitude_prune");
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("density", density);
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
    return new TaskVectors(space, new Pruning.Magnitude(density), new Combination.Sum());
  }

  @Override
  public String toString() {
    return "MagnitudePrune{density=" + density + ", space=" + space + "}";
  }
}

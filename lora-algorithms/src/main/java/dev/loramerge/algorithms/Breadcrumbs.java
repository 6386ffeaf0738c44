package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * Model Breadcrumbs (Davari and Belilovsky 2023), as mergekit applies it, on each adapter's full
 * update sᵢ·BᵢAᵢ: drop the {@code gamma} fraction of largest-magnitude entries as outliers, keep
 * the next {@code density} fraction, sum weighted by wᵢ, and re-rank by SVD. Ranks may differ.
 *
 * @param density the fraction of entries kept, in (0, 1]
 * @param gamma the fraction of largest magnitudes dropped as outliers, in [0, 1)
 */
public record Breadcrumbs(double density, double gamma) implements MergeAlgorithm {
  /** mergekit's default outlier fraction. */
  public static final double DEFAULT_GAMMA = 0.01;

  /** Checks the parameters. */
  public Breadcrumbs {
    TaskVectors.checkDensity(density);
    checkArgument(gamma >= 0 && gamma < 1, "gamma must be in [0, 1), got %s", gamma);
  }

  /** Keeps {@code density} of the entries after dropping the top {@value #DEFAULT_GAMMA}. */
  public static Breadcrumbs of(double density) {
    return new Breadcrumbs(density, DEFAULT_GAMMA);
  }

  /** This method dropping the top {@code gamma} fraction as outliers. */
  public Breadcrumbs withGamma(double gamma) {
    return new Breadcrumbs(density, gamma);
  }

  @Override
  public String name() {
    return "breadcrumbs";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("density", density, "gamma", gamma);
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
    return new TaskVectors(Space.UPDATES, new Pruning.Outliers(density, gamma), new Combination.Sum());
  }

  @Override
  public String toString() {
    return "Breadcrumbs{density=" + density + ", gamma=" + gamma + "}";
  }
}

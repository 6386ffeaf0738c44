package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/**
 * TIES (Yadav et al. 2023): each task tensor pruned to the {@code density} largest magnitudes,
 * signs elected per entry, agreeing entries averaged. PEFT's {@code ties} on the factors ({@code
 * Ties.of(d)}: all ranks equal, cross terms BᵢAⱼ as PEFT's), {@code ties_svd} on the full updates
 * ({@code Ties.of(d).onUpdates()}: ranks may differ, the result re-ranked).
 *
 * @param density the fraction of entries kept, in (0, 1]
 * @param majoritySign how signs are elected
 * @param space where the method works
 */
public record Ties(double density, MajoritySign majoritySign, Space space) implements MergeAlgorithm {
  /** Checks the parameters. */
  public Ties {
    TaskVectors.checkDensity(density);
    checkNotNull(majoritySign, "majoritySign");
    checkNotNull(space, "space");
  }

  /** {@code ties} with {@code density}, majority sign total. */
  public static Ties of(double density) {
    return new Ties(density, MajoritySign.TOTAL, Space.FACTORS);
  }

  /** This method electing signs by {@code majoritySign}. */
  public Ties withMajoritySign(MajoritySign majoritySign) {
    return new Ties(density, majoritySign, space);
  }

  /** This method on the full updates, re-ranked: {@code ties_svd}. */
  public Ties onUpdates() {
    return new Ties(density, majoritySign, Space.UPDATES);
  }

  /** {@link #onUpdates()} for the method on the factors; empty for the one on the full updates. */
  @Override
  public Optional<MergeAlgorithm> onFullUpdates() {
    return space == Space.FACTORS ? Optional.of(onUpdates()) : Optional.empty();
  }

  @Override
  public String name() {
    return space.methodName("ties");
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("density", density, "majority_sign_method", majoritySign.peftName());
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
    return new TaskVectors(space, new Pruning.Magnitude(density), new Combination.ElectedSign(majoritySign));
  }

  @Override
  public String toString() {
    return "Ties{density=" + density + ", majoritySign=" + majoritySign.peftName() + ", space=" + space + "}";
  }
}

package dev.loramerge.algorithms;

import dev.loramerge.algorithms.internal.TaskTensors;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Optional;

/** How each task tensor is pruned before the tensors are combined. */
sealed interface Pruning {
  /**
   * Prunes {@code tensor} (row-major, rows of {@code columns}) in place, or returns the magnitude
   * below which the combination is to take its entries as zero (a pass fewer over memory); 0
   * where there is no such cut.
   *
   * @param stream names the tensor's random stream, with the module and {@code adapterIndex}
   */
  float prune(float[] tensor, int columns, ModuleMerge module, int adapterIndex, String stream);

  /** This pruning followed by {@code combine} as {@link TaskArithmetic}, where it describes it. */
  default Optional<TaskArithmetic> then(TaskArithmetic.Combine combine) {
    return Optional.empty();
  }

  /** Nothing pruned. */
  record None() implements Pruning {
    @Override
    public float prune(float[] tensor, int columns, ModuleMerge module, int adapterIndex, String stream) {
      return 0;
    }

    @Override
    public Optional<TaskArithmetic> then(TaskArithmetic.Combine combine) {
      return Optional.of(new TaskArithmetic(TaskArithmetic.Prune.NONE, 1, 0, 0, 0, combine));
    }
  }

  /** The ⌊density·n⌋ entries of largest magnitude kept (PEFT's {@code magnitude_based_pruning}). */
  record Magnitude(double density) implements Pruning {
    @Override
    public float prune(float[] tensor, int columns, ModuleMerge module, int adapterIndex, String stream) {
      return TaskTensors.magnitudeCut(tensor, density);
    }

    @Override
    public Optional<TaskArithmetic> then(TaskArithmetic.Combine combine) {
      return Optional.of(new TaskArithmetic(TaskArithmetic.Prune.MAGNITUDE, density, 0, 0, 0, combine));
    }
  }

  /** DARE: each entry kept with probability density and rescaled by 1/density. */
  record Random(double density, long seed) implements Pruning {
    @Override
    public float prune(float[] tensor, int columns, ModuleMerge module, int adapterIndex, String stream) {
      TaskTensors.pruneRandomly(tensor, density, module.streamSeed(seed, adapterIndex, stream));
      return 0;
    }

    @Override
    public Optional<TaskArithmetic> then(TaskArithmetic.Combine combine) {
      return Optional.of(new TaskArithmetic(TaskArithmetic.Prune.RANDOM, density, 0, 0, seed, combine));
    }
  }

  /** Model Breadcrumbs: the top gamma fraction dropped as outliers, the next density kept. */
  record Outliers(double density, double gamma) implements Pruning {
    @Override
    public float prune(float[] tensor, int columns, ModuleMerge module, int adapterIndex, String stream) {
      TaskTensors.pruneBreadcrumbs(tensor, density, gamma);
      return 0;
    }

    @Override
    public Optional<TaskArithmetic> then(TaskArithmetic.Combine combine) {
      return Optional.of(new TaskArithmetic(TaskArithmetic.Prune.OUTLIERS, density, gamma, 0, 0, combine));
    }
  }

  /** DELLA's MagPrune: keep probabilities by magnitude rank in each row, density ± epsilon. */
  record RankedRandom(double density, double epsilon, long seed) implements Pruning {
    @Override
    public float prune(float[] tensor, int columns, ModuleMerge module, int adapterIndex, String stream) {
      TaskTensors.pruneDella(tensor, columns, density, epsilon, module.random(seed, adapterIndex, stream));
      return 0;
    }

    @Override
    public Optional<TaskArithmetic> then(TaskArithmetic.Combine combine) {
      return Optional.of(new TaskArithmetic(TaskArithmetic.Prune.RANKED, density, 0, epsilon, seed, combine));
    }
  }
}

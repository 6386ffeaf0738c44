package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;

import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.merge.MergeAlgorithm.Requirements;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.math.BigDecimal;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * The body every element-wise method shares: each adapter's task tensors pruned, then combined,
 * in factor space or on the full updates (see {@link Space}).
 *
 * @param space where the method works
 * @param pruning how each task tensor is pruned
 * @param combination how the pruned tensors are combined
 */
record TaskVectors(Space space, Pruning pruning, Combination combination) {

  /** What a method in {@code space} needs of the merger. */
  static Requirements requirements(Space space) {
    return space == Space.FACTORS
        ? Requirements.none().withEqualRanks()
        : Requirements.none().withReRanking().withFullUpdates();
  }

  /** The merge of {@code module} by the method called {@code name}. */
  ModuleUpdate merge(ModuleMerge module, String name) {
    return space == Space.FACTORS ? mergeFactors(module, name) : mergeUpdates(module);
  }

  /**
   * The method of {@link #merge} as {@link TaskArithmetic}: on the full updates, where the pruning
   * is one it describes.
   */
  Optional<TaskArithmetic> arithmetic() {
    return space == Space.UPDATES ? pruning.then(combination.described()) : Optional.empty();
  }

  private ModuleUpdate mergeFactors(ModuleMerge module, String name) {
    List<ModuleInput> inputs = module.inputs();
    double[] weights = new double[inputs.size()];
    for (int i = 0; i < weights.length; i++) {
      double product = inputs.get(i).weight() * inputs.get(i).scale();
      if (product < 0) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "%s weighs each factor by √(w·s), but module '%s' has w·s = %s in input %d; use a"
                    + " positive weight, cat, or an *_svd method",
                name,
                module.key(),
                product,
                inputs.get(i).index()));
      }
      weights[i] = Math.sqrt(product);
    }
    int rank = inputs.get(0).module().rank();
    float[][] downs = inputs.stream().map(TaskVectors::downValues).toArray(float[][]::new);
    float[] down = combine(module, downs, downs[0].length / rank, weights, "down");
    float[][] ups = inputs.stream().map(TaskVectors::upValues).toArray(float[][]::new);
    float[] up = combine(module, ups, rank, weights, "up");
    return new ModuleUpdate.Factors(up, down, rank);
  }

  private ModuleUpdate mergeUpdates(ModuleMerge module) {
    List<ModuleInput> inputs = module.inputs();
    double[] weights = inputs.stream().mapToDouble(ModuleInput::weight).toArray();
    float[][] tensors = inputs.stream().map(ModuleInput::delta).toArray(float[][]::new);
    // From the weight's shape: a materialised input (a LoHa, a full difference) has no factors.
    LoraModule first = inputs.get(0).module();
    int columns = Math.toIntExact(TensorData.numel(first.weightShape()) / first.outFeatures());
    return new ModuleUpdate.Dense(combine(module, tensors, columns, weights, TaskArithmetic.STREAM), columns);
  }

  /**
   * Prunes {@code tensors} (row-major, rows of {@code columns}; changed in place) and combines
   * them into a new array.
   */
  private float[] combine(ModuleMerge module, float[][] tensors, int columns, double[] weights, String stream) {
    float[] cuts = new float[tensors.length];
    for (int i = 0; i < tensors.length; i++) {
      cuts[i] = pruning.prune(tensors[i], columns, module, module.inputs().get(i).index(), stream);
    }
    return combination.combine(tensors, weights, cuts);
  }

  private static float[] upValues(ModuleInput input) {
    float[] values = new float[Math.toIntExact(input.module().up().numel())];
    input.readUp(0, values, values.length);
    return values;
  }

  private static float[] downValues(ModuleInput input) {
    float[] values = new float[Math.toIntExact(input.module().down().numel())];
    input.readDown(0, values, values.length);
    return values;
  }

  /** Checks that {@code density}, the fraction of entries kept, is in (0, 1]. */
  static void checkDensity(double density) {
    checkArgument(density > 0 && density <= 1, "density must be in (0, 1], got %s", density);
  }

  /** 1 − density in decimal, so that a density of 0.7 shows a drop rate of 0.3. */
  static String dropRate(double density) {
    return BigDecimal.ONE.subtract(BigDecimal.valueOf(density)).stripTrailingZeros().toPlainString();
  }

  /** The density that keeps 1 − {@code dropRate}, computed in decimal. */
  static double densityFor(double dropRate) {
    checkArgument(dropRate >= 0 && dropRate < 1, "drop rate must be in [0, 1), got %s", dropRate);
    return BigDecimal.ONE.subtract(BigDecimal.valueOf(dropRate)).doubleValue();
  }
}

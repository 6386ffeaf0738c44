package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraMergeException;
import dev.loramerge.algorithms.internal.TaskTensors;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * The shared body of PEFT's element-wise combination types: optionally prune each task tensor
 * (by magnitude or at random), then sum them weighted or elect signs and take the disjoint mean.
 *
 * <p>In factor space (PEFT's {@code ties}, {@code dare_*}, {@code magnitude_prune}) the task
 * tensors are the adapters' A's, then their B's, each weighted by vᵢ = √(wᵢ·sᵢ); the result has
 * cross terms BᵢAⱼ by construction, as PEFT's has. In delta space (the {@code *_svd} types) they
 * are the full updates sᵢ·BᵢAᵢ weighted by wᵢ, and the merger re-ranks the dense result.
 */
abstract class PeftMethod implements MergeAlgorithm {
  /** Where the method works. */
  enum Space {
    FACTORS,
    DELTAS
  }

  /** How each task tensor is pruned first. */
  enum Pruning {
    NONE,
    MAGNITUDE,
    RANDOM,
    BREADCRUMBS,
    DELLA
  }

  /** How the pruned tensors are combined. */
  enum Combination {
    SUM,
    TIES
  }

  private final String name;
  private final Space space;
  private final Pruning pruning;
  private final Combination combination;
  private final double density;
  private final MajoritySign majoritySign;
  private final long seed;
  private final double gamma;
  private final double epsilon;

  PeftMethod(
      String name,
      Space space,
      Pruning pruning,
      Combination combination,
      double density,
      MajoritySign majoritySign,
      long seed) {
    this(name, space, pruning, combination, density, majoritySign, seed, 0, 0);
  }

  PeftMethod(
      String name,
      Space space,
      Pruning pruning,
      Combination combination,
      double density,
      MajoritySign majoritySign,
      long seed,
      double gamma,
      double epsilon) {
    checkArgument(density > 0 && density <= 1, "density must be in (0, 1], got %s", density);
    checkArgument(gamma >= 0 && gamma < 1, "gamma must be in [0, 1), got %s", gamma);
    checkArgument(epsilon >= 0 && epsilon <= density && density + epsilon <= 1 || pruning != Pruning.DELLA,
        "epsilon must keep density ± epsilon within [0, 1], got density %s and epsilon %s", density, epsilon);
    this.name = name;
    this.space = space;
    this.pruning = pruning;
    this.combination = combination;
    this.density = density;
    this.majoritySign = majoritySign;
    this.seed = seed;
    this.gamma = gamma;
    this.epsilon = epsilon;
  }

  /** Breadcrumbs' fraction of largest-magnitude outliers dropped. */
  double gamma() {
    return gamma;
  }

  /** DELLA's spread of keep probabilities around the density. */
  double epsilon() {
    return epsilon;
  }

  /** The fraction of each task tensor's entries kept (1 when nothing is pruned). */
  public double density() {
    return density;
  }

  /** How TIES elects signs (meaningful for the TIES methods). */
  public MajoritySign majoritySign() {
    return majoritySign;
  }

  /** The seed of the random masks (meaningful for the DARE methods). */
  public long seed() {
    return seed;
  }

  @Override
  public final String name() {
    return name;
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    ImmutableMap.Builder<String, Object> parameters = ImmutableMap.builder();
    if (pruning != Pruning.NONE) {
      parameters.put("density", density);
    }
    if (combination == Combination.TIES) {
      parameters.put("majority_sign_method", majoritySign.peftName());
    }
    if (pruning == Pruning.BREADCRUMBS) {
      parameters.put("gamma", gamma);
    }
    if (pruning == Pruning.DELLA) {
      parameters.put("epsilon", epsilon);
    }
    if (isRandom()) {
      parameters.put("seed", seed);
    }
    return parameters.build();
  }

  @Override
  public final Requirements requirements() {
    return space == Space.FACTORS ? Requirements.none().withEqualRanks() : Requirements.none().withReRanking();
  }

  @Override
  public final ModuleUpdate merge(ModuleMerge module) {
    return space == Space.FACTORS ? mergeFactors(module) : mergeDeltas(module);
  }

  private ModuleUpdate mergeFactors(ModuleMerge module) {
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
    float[][] downs = inputs.stream().map(PeftMethod::downValues).toArray(float[][]::new);
    float[] down = combine(module, downs, downs[0].length / rank, weights, "down");
    float[] up = combine(module, inputs.stream().map(PeftMethod::upValues).toArray(float[][]::new), rank, weights, "up");
    return new ModuleUpdate.Factors(up, down, rank);
  }

  private ModuleUpdate mergeDeltas(ModuleMerge module) {
    List<ModuleInput> inputs = module.inputs();
    double[] weights = inputs.stream().mapToDouble(ModuleInput::weight).toArray();
    float[][] tensors = inputs.stream().map(ModuleInput::delta).toArray(float[][]::new);
    int columns = Math.toIntExact(inputs.get(0).module().down().numel() / inputs.get(0).module().rank());
    return new ModuleUpdate.Dense(combine(module, tensors, columns, weights, "delta"), columns);
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

  /**
   * Prunes {@code tensors} (row-major, rows of {@code columns}; changed in place) and combines
   * them into a new array. Magnitude pruning is applied as the combination reads the tensors,
   * which saves a pass over each.
   */
  private float[] combine(ModuleMerge module, float[][] tensors, int columns, double[] weights, String stream) {
    List<ModuleInput> inputs = module.inputs();
    float[] cuts = new float[tensors.length];
    for (int i = 0; i < tensors.length; i++) {
      switch (pruning) {
        case MAGNITUDE:
          cuts[i] = TaskTensors.magnitudeCut(tensors[i], density);
          break;
        case RANDOM:
          TaskTensors.pruneRandomly(tensors[i], density, module.streamSeed(seed, inputs.get(i).index(), stream));
          break;
        case BREADCRUMBS:
          TaskTensors.pruneBreadcrumbs(tensors[i], density, gamma);
          break;
        case DELLA:
          TaskTensors.pruneDella(
              tensors[i], columns, density, epsilon,
              module.random(seed, inputs.get(i).index(), stream));
          break;
        case NONE:
          break;
        default:
          throw new AssertionError(pruning);
      }
    }
    return combination == Combination.TIES
        ? TaskTensors.electAndMerge(tensors, weights, majoritySign, cuts)
        : TaskTensors.weightedSum(tensors, weights, cuts);
  }

  /** 1 − density in decimal, so that a density of 0.7 shows a drop rate of 0.3. */
  static String dropRate(double density) {
    return java.math.BigDecimal.ONE.subtract(java.math.BigDecimal.valueOf(density)).stripTrailingZeros().toPlainString();
  }

  /** The density that keeps 1 − {@code dropRate}, computed in decimal. */
  static double densityFor(double dropRate) {
    checkArgument(dropRate >= 0 && dropRate < 1, "drop rate must be in [0, 1), got %s", dropRate);
    return java.math.BigDecimal.ONE.subtract(java.math.BigDecimal.valueOf(dropRate)).doubleValue();
  }

  @Override
  public boolean equals(Object other) {
    if (other == null || other.getClass() != getClass()) {
      return false;
    }
    PeftMethod that = (PeftMethod) other;
    return Double.compare(density, that.density) == 0
        && majoritySign == that.majoritySign
        && seed == that.seed
        && Double.compare(gamma, that.gamma) == 0
        && Double.compare(epsilon, that.epsilon) == 0;
  }

  @Override
  public int hashCode() {
    return Objects.hash(getClass(), density, majoritySign, seed, gamma, epsilon);
  }

  private boolean isRandom() {
    return pruning == Pruning.RANDOM || pruning == Pruning.DELLA;
  }

  @Override
  public String toString() {
    StringBuilder text = new StringBuilder(getClass().getSimpleName()).append('{');
    String separator = "";
    if (pruning != Pruning.NONE) {
      text.append("density=").append(density);
      separator = ", ";
    }
    if (pruning == Pruning.RANDOM) {
      text.append(separator).append("dropRate=").append(dropRate(density));
      separator = ", ";
    }
    if (pruning == Pruning.BREADCRUMBS) {
      text.append(separator).append("gamma=").append(gamma);
      separator = ", ";
    }
    if (pruning == Pruning.DELLA) {
      text.append(separator).append("epsilon=").append(epsilon);
      separator = ", ";
    }
    if (combination == Combination.TIES) {
      text.append(separator).append("majoritySign=").append(majoritySign.peftName());
      separator = ", ";
    }
    if (isRandom()) {
      text.append(separator).append("seed=").append(seed);
    }
    return text.append('}').toString();
  }
}

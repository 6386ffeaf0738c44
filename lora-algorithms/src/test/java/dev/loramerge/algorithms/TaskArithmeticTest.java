package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.SplittableRandom;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/**
 * Each method's {@link TaskArithmetic}, which the merger runs on a GPU, against its own merge on
 * the host: the dense update the method gives for every module must be, bit for bit, the
 * description evaluated here as its Javadoc states it (products as float32 fused multiply-adds,
 * magnitude ranks by sorting, DARE from the module's stream, the combination in float64).
 */
class TaskArithmeticTest {
  private static final ModuleKey LINEAR = ModuleKey.of(Component.UNET, "down_blocks.0.attentions.0.proj_in");
  private static final ModuleKey CONV = ModuleKey.of(Component.UNET, "down_blocks.0.resnets.0.conv1");
  private static final ModuleKey PARTIAL = ModuleKey.of(Component.UNET, "mid_block.attentions.0.proj_out");
  private static final int INFINITY_BITS = Float.floatToRawIntBits(Float.POSITIVE_INFINITY);

  @Test
  void describesTheMethodsOnFullUpdatesThatItCan() {
    assertThat(Ties.of(0.4).onUpdates().taskArithmetic())
        .contains(new TaskArithmetic(TaskArithmetic.Prune.MAGNITUDE, 0.4, 0, 0, 0, TaskArithmetic.Combine.TOTAL_SIGN));
    assertThat(DareTies.of(0.5).withSeed(9).withMajoritySign(MajoritySign.FREQUENCY).onUpdates().taskArithmetic())
        .contains(new TaskArithmetic(TaskArithmetic.Prune.RANDOM, 0.5, 0, 0, 9, TaskArithmetic.Combine.FREQUENCY_SIGN));
    assertThat(MagnitudePrune.of(0.3).onUpdates().taskArithmetic())
        .contains(new TaskArithmetic(TaskArithmetic.Prune.MAGNITUDE, 0.3, 0, 0, 0, TaskArithmetic.Combine.SUM));
    assertThat(Breadcrumbs.of(0.5).withGamma(0.1).taskArithmetic())
        .contains(new TaskArithmetic(TaskArithmetic.Prune.OUTLIERS, 0.5, 0.1, 0, 0, TaskArithmetic.Combine.SUM));
    assertThat(Della.of(0.5).withEpsilon(0.2).withSeed(3).taskArithmetic())
        .contains(new TaskArithmetic(TaskArithmetic.Prune.RANKED, 0.5, 0, 0.2, 3, TaskArithmetic.Combine.TOTAL_SIGN));
    for (MergeAlgorithm method : List.of(Ties.of(0.4), DareLinear.of(0.5), MagnitudePrune.of(0.3), Linear.of(), Svd.of())) {
      assertThat(method.taskArithmetic()).as("%s has no description the device runs", method).isEmpty();
    }
  }

  @Test
  void refusesParametersThatDescribeNoMethod() {
    assertThatThrownBy(() -> new TaskArithmetic(TaskArithmetic.Prune.NONE, 0.5, 0, 0, 0, TaskArithmetic.Combine.SUM))
        .as("nothing pruned at a density below 1")
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new TaskArithmetic(TaskArithmetic.Prune.MAGNITUDE, 0.5, 0.1, 0, 0, TaskArithmetic.Combine.SUM))
        .as("outliers dropped by a pruning without them")
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new TaskArithmetic(TaskArithmetic.Prune.RANDOM, 0, 0, 0, 1, TaskArithmetic.Combine.SUM))
        .as("a density of 0")
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new TaskArithmetic(TaskArithmetic.Prune.RANDOM, 0.5, 0, 0.1, 1, TaskArithmetic.Combine.SUM))
        .as("a spread of probabilities for a pruning without ranks")
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new TaskArithmetic(TaskArithmetic.Prune.RANKED, 0.3, 0, 0.4, 1, TaskArithmetic.Combine.SUM))
        .as("probabilities below 0")
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new TaskArithmetic(TaskArithmetic.Prune.RANKED, 0.8, 0, 0.3, 1, TaskArithmetic.Combine.SUM))
        .as("probabilities above 1")
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void everyDescriptionGivesTheMethodsBitsWithTiesAndNonFiniteEntries() {
    List<LoraAdapter> adapters = List.of(adapter("first", 3, 1, false), adapter("second", 5, 2, true), adapter("third", 4, 3, false));
    for (MergeAlgorithm method : List.of(
        Ties.of(0.45).onUpdates(),
        Ties.of(0.3).withMajoritySign(MajoritySign.FREQUENCY).onUpdates(),
        MagnitudePrune.of(0.35).onUpdates(),
        MagnitudePrune.of(0.999).onUpdates(),
        DareLinear.of(0.6).withSeed(3).onUpdates(),
        DareTies.of(0.5).withSeed(4).onUpdates(),
        DareTies.of(0.7).withSeed(5).withMajoritySign(MajoritySign.FREQUENCY).onUpdates(),
        Breadcrumbs.of(0.5).withGamma(0.1),
        Breadcrumbs.of(0.3).withGamma(0.8),
        Breadcrumbs.of(0.6).withGamma(0),
        Della.of(0.45).withSeed(3),
        Della.of(0.3).withEpsilon(0.3).withMajoritySign(MajoritySign.FREQUENCY).withSeed(4),
        Della.of(0.6).withEpsilon(0).withSeed(5))) {
      for (int count : new int[] {2, 3}) {
        Capturing capturing = new Capturing(method);
        LoraMerger.Builder merger = LoraMerger.builder().algorithm(capturing).rank(2);
        double[] weights = {0.7, -0.4, 1.3};
        for (int i = 0; i < count; i++) {
          merger.add(adapters.get(i), weights[i]);
        }
        merger.merge();
        assertThat(capturing.updates.keySet()).as("%s merged every module", method).containsExactlyInAnyOrder(LINEAR, CONV, PARTIAL);
        TaskArithmetic arithmetic = method.taskArithmetic().orElseThrow();
        capturing.updates.forEach((key, update) -> assertThat(bits(update))
            .as("%s of %d adapters, module %s", method, count, key)
            .isEqualTo(bits(evaluate(arithmetic, capturing.modules.get(key)))));
      }
    }
  }

  /**
   * Modules whose factors are small multiples of ¼, so that their products have many entries of
   * equal magnitude; where {@code nonFinite}, an infinity in one factor makes ±∞ and NaN entries.
   */
  private static LoraAdapter adapter(String name, int rank, long seed, boolean nonFinite) {
    SplittableRandom random = new SplittableRandom(seed);
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(name);
    adapter.add(LoraModule.of(LINEAR, quarters(random, rank, 24), quarters(random, 16, rank), rank * 0.75));
    TensorData up = quarters(random, 6, rank, 1, 1);
    if (nonFinite) {
      double[] values = up.toDoubleArray();
      values[rank] = Double.POSITIVE_INFINITY;
      up = TensorData.ofDoubles(values, DType.F32, 6, rank, 1, 1);
    }
    adapter.add(LoraModule.of(CONV, quarters(random, rank, 4, 3, 3), up, rank));
    if (!name.equals("second")) {
      adapter.add(LoraModule.of(PARTIAL, quarters(random, rank, 10), quarters(random, 12, rank), rank * 0.5));
    }
    return adapter.build();
  }

  private static TensorData quarters(SplittableRandom random, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (random.nextInt(7) - 3) / 4.0;
    }
    return TensorData.ofDoubles(values, DType.F32, shape);
  }

  private static float[] evaluate(TaskArithmetic arithmetic, ModuleMerge module) {
    List<ModuleInput> inputs = module.inputs();
    float[][] pruned = new float[inputs.size()][];
    for (int t = 0; t < pruned.length; t++) {
      ModuleInput input = inputs.get(t);
      float[] update = product(input);
      pruned[t] = switch (arithmetic.prune()) {
        case NONE -> update;
        case MAGNITUDE -> byMagnitude(update, (int) (arithmetic.density() * update.length));
        case RANDOM -> randomly(update, arithmetic.density(), module.random(arithmetic.seed(), input.index(), "delta"));
        case OUTLIERS -> withoutOutliers(update, arithmetic.density(), arithmetic.gamma());
        case RANKED -> byRankInRow(update, Math.toIntExact(input.module().down().numel() / input.module().rank()), arithmetic,
            module.random(arithmetic.seed(), input.index(), "delta"));
      };
    }
    float[] merged = new float[pruned[0].length];
    for (int i = 0; i < merged.length; i++) {
      if (arithmetic.combine() == TaskArithmetic.Combine.SUM) {
        double total = 0;
        for (int t = 0; t < pruned.length; t++) {
          total += inputs.get(t).weight() * pruned[t][i];
        }
        merged[i] = (float) total;
        continue;
      }
      double votes = 0;
      for (float[] tensor : pruned) {
        votes += arithmetic.combine() == TaskArithmetic.Combine.TOTAL_SIGN ? tensor[i] : Math.signum(tensor[i]);
      }
      float elected = votes >= 0 ? 1 : -1;
      double total = 0;
      int agreeing = 0;
      for (int t = 0; t < pruned.length; t++) {
        if (Math.signum(pruned[t][i]) == elected) {
          total += inputs.get(t).weight() * pruned[t][i];
          agreeing++;
        }
      }
      merged[i] = (float) (total / Math.max(1, agreeing));
    }
    return merged;
  }

  private static float[] product(ModuleInput input) {
    int rank = input.module().rank();
    float[] up = new float[Math.toIntExact(input.module().up().numel())];
    float[] down = new float[Math.toIntExact(input.module().down().numel())];
    input.readUp(0, up, up.length);
    input.readDown(0, down, down.length);
    int rows = up.length / rank;
    int cols = down.length / rank;
    float scale = (float) input.scale();
    float[] update = new float[rows * cols];
    for (int i = 0; i < rows; i++) {
      for (int j = 0; j < cols; j++) {
        float sum = 0;
        for (int k = 0; k < rank; k++) {
          sum = Math.fma(up[i * rank + k], down[k * cols + j], sum);
        }
        update[i * cols + j] = sum * scale;
      }
    }
    return update;
  }

  /**
   * Of the entries whose magnitude is at least the keep-th largest (NaN above infinity), at most
   * {@code keep} that are not NaN: those above it, then those equal to it in order.
   */
  private static float[] byMagnitude(float[] update, int keep) {
    if (keep >= update.length) {
      return update;
    }
    float[] kept = new float[update.length];
    if (keep <= 0) {
      return kept;
    }
    int threshold = IntStream.range(0, update.length).map(i -> magnitude(update[i])).boxed()
        .sorted(Comparator.reverseOrder()).skip(keep - 1).findFirst().orElseThrow();
    int taken = 0;
    for (int i = 0; i < update.length; i++) {
      if (magnitude(update[i]) > threshold && magnitude(update[i]) <= INFINITY_BITS) {
        kept[i] = update[i];
        taken++;
      }
    }
    for (int i = 0; i < update.length && taken < keep && threshold <= INFINITY_BITS; i++) {
      if (magnitude(update[i]) == threshold) {
        kept[i] = update[i];
        taken++;
      }
    }
    return kept;
  }

  private static float[] withoutOutliers(float[] update, double density, double gamma) {
    int keep = (int) (density * update.length);
    int top = Math.min((int) (gamma * update.length), update.length - keep);
    float[] kept = byMagnitude(update, top + keep);
    float[] outliers = byMagnitude(update, top);
    for (int i = 0; i < kept.length; i++) {
      if (outliers[i] != 0) {
        kept[i] = 0;
      }
    }
    return kept;
  }

  private static float[] randomly(float[] update, double density, SplittableRandom random) {
    float[] kept = new float[update.length];
    for (int i = 0; i < update.length; i++) {
      kept[i] = random.nextDouble() < density ? (float) (update[i] / density) : 0;
    }
    return kept;
  }

  /** DELLA's rows: rank r of c by magnitude (then column) kept with p = (d − ε) + 2εr/(c − 1), drawn only where p > 0. */
  private static float[] byRankInRow(float[] update, int columns, TaskArithmetic arithmetic, SplittableRandom random) {
    float[] kept = new float[update.length];
    for (int start = 0; start < update.length; start += columns) {
      int first = start;
      Integer[] byMagnitude = IntStream.range(0, columns).boxed().toArray(Integer[]::new);
      Arrays.sort(byMagnitude, Comparator.<Integer>comparingInt(j -> magnitude(update[first + j])).thenComparingInt(j -> j));
      for (int rank = 0; rank < columns; rank++) {
        double p = columns == 1
            ? arithmetic.density()
            : (arithmetic.density() - arithmetic.epsilon()) + (2 * arithmetic.epsilon() * rank) / (columns - 1);
        p = Math.min(1, Math.max(0, p));
        int index = first + byMagnitude[rank];
        if (p > 0 && random.nextDouble() < p) {
          kept[index] = (float) (update[index] / p);
        }
      }
    }
    return kept;
  }

  private static int magnitude(float value) {
    return Float.floatToRawIntBits(value) & 0x7fffffff;
  }

  private static int[] bits(float[] values) {
    return IntStream.range(0, values.length).map(i -> Float.floatToRawIntBits(values[i])).toArray();
  }

  /** The method, keeping the dense update it gives for each module and the module as it saw it. */
  private static final class Capturing implements MergeAlgorithm {
    private final MergeAlgorithm method;
    private final Map<ModuleKey, ModuleMerge> modules = new LinkedHashMap<>();
    private final Map<ModuleKey, float[]> updates = new LinkedHashMap<>();

    Capturing(MergeAlgorithm method) {
      this.method = method;
    }

    @Override
    public String name() {
      return method.name();
    }

    @Override
    public ImmutableMap<String, Object> parameters() {
      return method.parameters();
    }

    @Override
    public Requirements requirements() {
      return method.requirements();
    }

    @Override
    public Optional<TaskArithmetic> taskArithmetic() {
      return method.taskArithmetic();
    }

    /** The merger gets zeros: an update with NaN entries has no SVD. */
    @Override
    public synchronized ModuleUpdate merge(ModuleMerge module) {
      ModuleUpdate.Dense update = (ModuleUpdate.Dense) method.merge(module);
      modules.put(module.key(), module);
      updates.put(module.key(), update.values());
      return new ModuleUpdate.Dense(new float[update.values().length], update.columns());
    }
  }
}

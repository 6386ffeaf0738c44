package dev.loramerge.bench;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * How close the randomized re-rank of a dense merge comes to the exact one, on a sample of
 * modules: the merge is run twice on them, with the randomized and with the exact SVD, in
 * float32 so that rounding the factors to fp16 plays no part. D is the method's dense update
 * before re-ranking, D̂ the randomized re-rank and D_r the exact truncation to the same rank (the
 * best any rank-r update can do), all summed over the sampled modules:
 *
 * <ul>
 *   <li>{@code relative} = ‖D̂ − D_r‖ / ‖D_r‖, how far the two results lie apart;
 *   <li>{@code excess} = ‖D − D̂‖ / ‖D − D_r‖ − 1, how much larger the randomized truncation's
 *       error is than the optimum's: the benchmark's target is "within 1 % of the exact truncation".
 * </ul>
 *
 * For the flat spectra that DARE leaves, {@code relative} can be a few percent although {@code
 * excess} is far below 1 %: many rank-r updates are nearly as good as the best one.
 */
record ReRankError(double relative, double excess) {
  /**
   * Measures {@code algorithm} (a method that {@link MergeAlgorithm#reRanks}) merging {@code
   * style} and {@code subject} with these weights to {@code rank}, on {@code sampled} modules
   * spread evenly over the adapter's.
   */
  static ReRankError measure(
      LoraAdapter style, double styleWeight, LoraAdapter subject, double subjectWeight, MergeAlgorithm algorithm, int rank,
      int sampled) {
    LoraAdapter.Builder smallStyle = LoraAdapter.builder().name(style.name());
    LoraAdapter.Builder smallSubject = LoraAdapter.builder().name(subject.name());
    List<ModuleKey> keys = new ArrayList<>(style.modules().keySet());
    int stride = Math.max(1, keys.size() / sampled);
    for (int i = 0; i < keys.size(); i += stride) {
      smallStyle.add(style.modules().get(keys.get(i)));
      smallSubject.add(subject.modules().get(keys.get(i)));
    }
    Map<ModuleKey, float[]> dense = new ConcurrentHashMap<>();
    LoraMerger.Builder builder =
        LoraMerger.builder()
            .add(smallStyle.build(), styleWeight)
            .add(smallSubject.build(), subjectWeight)
            .algorithm(new Capturing(algorithm, dense))
            .rank(rank)
            .dtype(DType.F32);
    LoraAdapter randomized = builder.merge();
    LoraAdapter exact = builder.exactSvd(true).merge();
    double apart = 0;
    double best = 0;
    double randomizedTail = 0;
    double optimalTail = 0;
    for (LoraModule optimal : exact.modules().values()) {
      double[] truncated = optimal.deltaF64();
      double[] approximated = randomized.modules().get(optimal.key()).deltaF64();
      float[] full = dense.get(optimal.key());
      for (int i = 0; i < full.length; i++) {
        apart += square(approximated[i] - truncated[i]);
        best += square(truncated[i]);
        randomizedTail += square(full[i] - approximated[i]);
        optimalTail += square(full[i] - truncated[i]);
      }
    }
    return new ReRankError(Math.sqrt(apart / best), Math.sqrt(randomizedTail / optimalTail) - 1);
  }

  private static double square(double value) {
    return value * value;
  }

  /**
   * {@code method}, keeping a copy of each module's update as it hands it to the merger. Both
   * merges compute the same updates (the streams depend on the seed and the module alone), so
   * the second overwrites the first with the same values.
   */
  private record Capturing(MergeAlgorithm method, Map<ModuleKey, float[]> dense) implements MergeAlgorithm {
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
    public ModuleUpdate merge(ModuleMerge module) {
      ModuleUpdate update = method.merge(module);
      dense.put(module.key(), values(update));
      return update;
    }

    /** The dense update's values: only a dense update is re-ranked by the randomized SVD. */
    private static float[] values(ModuleUpdate update) {
      if (update instanceof ModuleUpdate.Dense dense) {
        return dense.values().clone();
      }
      throw new IllegalArgumentException("re-rank errors need a dense update, got " + update.getClass().getSimpleName());
    }
  }
}

package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.linalg.LazyManager;
import java.util.List;
import java.util.Optional;

/**
 * A merger's updates one module at a time, in float64, as a fuse adds them to base weights (see
 * {@link LoraMerger#updates()}). Native buffers are reused from one module to the next, so make
 * one per fuse. Thread-safe.
 */
public final class ModuleUpdates {
  private final ModuleMerger merger;
  private final MergeAlgorithm algorithm;
  private final Encoding encoding;
  private final boolean pruned;
  private final DenseBuffers buffers = new DenseBuffers();

  ModuleUpdates(ModuleMerger merger, MergeAlgorithm algorithm, Encoding encoding, boolean pruned) {
    this.merger = merger;
    this.algorithm = algorithm;
    this.encoding = encoding;
    this.pruned = pruned;
  }

  /**
   * The merged update of module {@code key}, scale 1, pruned as the merger prunes.
   *
   * <p>An algorithm that {@linkplain MergeAlgorithm#exactInFloat64 is exact in
   * float64} gets float64 factors and its update is not rounded; others get float32 factors, and
   * their update is taken as they return it, rounded to float32, so that fusing the merged
   * adapter and fusing directly give the same weights. The exact weighted sum with no pruning,
   * the default, is built in Java, where libtorch would make a handful of small arrays per module:
   * each wakes libtorch's OpenMP worker, which then spins for milliseconds on a core the fuse
   * needs.
   *
   * @throws IllegalArgumentException if no input has the module with a weight other than 0
   * @throws dev.loramerge.LoraMergeException if the inputs' modules do not fit together
   */
  public Float64Factors factors(ModuleKey key) {
    if (algorithm != CatAlgorithm.INSTANCE || pruned) {
      DataType computeType = algorithm.exactInFloat64() ? DataType.FLOAT64 : DataType.FLOAT32;
      try (LazyManager manager = new LazyManager(NDManager::newBaseManager)) {
        Merged merged = merger.merge(manager, buffers, key, computeType, Optional.empty())
            .orElseThrow(() -> new IllegalArgumentException("no input has module '" + key + "'"));
        NDArray[] factors = merged.arrays(manager.get());
        double[] up = encoding.prunedDoubles(factors[0], computeType);
        return new Float64Factors(up, encoding.prunedDoubles(factors[1], computeType), merged.rank());
      }
    }
    List<MergeInput> present = merger.present(key);
    List<LoraModule> modules = present.stream().map(input -> input.adapter().modules().get(key)).toList();
    double[] coefficients = present.stream().mapToDouble(input -> input.weight(key)).toArray();
    for (int i = 0; i < coefficients.length; i++) {
      coefficients[i] *= modules.get(i).scale();
    }
    double[][] factors = CatAlgorithm.doubleFactors(modules, coefficients);
    return new Float64Factors(factors[0], factors[1], factors[0].length / Math.toIntExact(modules.get(0).outFeatures()));
  }

  /** The module of {@code key} of the first input that has it with a weight other than 0. */
  public LoraModule firstModule(ModuleKey key) {
    return merger.firstPresent(key);
  }
}

package dev.loramerge.merge;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.linalg.LazyManager;
import dev.loramerge.merge.spi.Offer.Precision;
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
  private final DenseBuffers buffers = new DenseBuffers();
  private final Device device;

  ModuleUpdates(ModuleMerger merger, MergeAlgorithm algorithm, Encoding encoding, Device device) {
    this.device = device;
    this.merger = merger;
    this.algorithm = algorithm;
    this.encoding = encoding;
  }

  /**
   * The merged update of module {@code key}, scale 1, pruned as the merger prunes.
   *
   * <p>A method that is {@linkplain MergeAlgorithm.Requirements#exactInFloat64 exact in float64}
   * is offered float64 and its update is not rounded; others are offered float32, and their
   * update is taken as they return it, rounded to float32, so that fusing the merged adapter and
   * fusing directly give the same weights. Methods that work on Java arrays, the exact weighted
   * sum among them, make no native array: libtorch would make a handful of small arrays per
   * module, each of which wakes libtorch's OpenMP worker, which then spins for milliseconds on a
   * core the fuse needs.
   *
   * @throws IllegalArgumentException if no input has the module with a weight other than 0
   * @throws dev.loramerge.LoraMergeException if the inputs' modules do not fit together
   */
  public Float64Factors factors(ModuleKey key) {
    Precision precision = algorithm.requirements().exactInFloat64() ? Precision.FLOAT64 : Precision.FLOAT32;
    try (LazyManager manager = new LazyManager(() -> NDManager.newBaseManager(device))) {
      Merged merged = merger.merge(manager, buffers, key, precision, Optional.empty())
          .orElseThrow(() -> new IllegalArgumentException("no input has module '" + key + "'"));
      return encoding.toFloat64(merged, precision);
    }
  }

  /** The module of {@code key} of the first input that has it with a weight other than 0. */
  public LoraModule firstModule(ModuleKey key) {
    return merger.firstPresent(key);
  }
}

package dev.loramerge.merge.spi;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import dev.loramerge.DType;
import dev.loramerge.ModuleKey;
import java.util.Optional;
import java.util.SplittableRandom;

/**
 * One module's merge as an algorithm sees it: the inputs that have this module (with non-zero
 * weight), the manager that owns every array, the target rank, and seeded random streams.
 */
public interface ModuleMerge {
  /** The module being merged. */
  ModuleKey key();

  /** The inputs, in the order the adapters were added. */
  ImmutableList<ModuleInput> inputs();

  /** Owns every array of this module's merge; closed by the merger once the result is copied out. */
  NDManager manager();

  /**
   * Whether the merger works on this update as arrays: in a fuse with a method that is {@link
   * dev.loramerge.merge.MergeAlgorithm#exactInFloat64} (the inputs' arrays are then float64, and float32
   * values would lose what such a method keeps). A method that can give either should then give
   * arrays; values would only be copied into fresh ones.
   */
  boolean arraysWanted();

  /**
   * The type the merger writes this module's factors in when it does nothing more to them (a
   * merge whose result is neither re-ranked nor truncated); empty otherwise, and in a fuse. When
   * present, an algorithm may give its factors already in this type ({@link
   * ModuleUpdate#encoded}), each value rounded once, instead of float32 values the merger would
   * copy and round.
   */
  default Optional<DType> outputType() {
    return Optional.empty();
  }

  /** The rank a re-ranked result is truncated to. */
  int targetRank();

  /**
   * The seed of the random stream keyed by {@code seed} (the algorithm's), this module, {@code
   * adapterIndex} and {@code stream} (e.g. "down", "up", "delta"): a counter-based derivation, so
   * the draws are the same whatever the order or thread in which modules are merged.
   */
  long streamSeed(long seed, int adapterIndex, String stream);

  /** {@code new SplittableRandom(streamSeed(seed, adapterIndex, stream))}. */
  default SplittableRandom random(long seed, int adapterIndex, String stream) {
    return new SplittableRandom(streamSeed(seed, adapterIndex, stream));
  }
}

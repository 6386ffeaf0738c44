package dev.loramerge.merge.spi;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import dev.loramerge.ModuleKey;
import java.util.SplittableRandom;

/**
 * One module's merge as an algorithm sees it: the inputs that have this module (with non-zero
 * weight), what the merger does with the update, the target rank, seeded random streams, and a
 * manager for methods that compute with DJL arrays.
 */
public interface ModuleMerge {
  /** The module being merged. */
  ModuleKey key();

  /** The inputs, in the order the adapters were added. */
  ImmutableList<ModuleInput> inputs();

  /** The precision the update is carried on in, and the type it may come encoded in. */
  Offer offer();

  /**
   * Owns every array an algorithm makes for this module; closed by the merger once the update is
   * taken. Asked for only when used, as the first call starts the engine.
   */
  NDManager manager();

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

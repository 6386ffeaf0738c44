package dev.loramerge.fuse;

import ai.djl.ndarray.NDArray;
import com.google.common.collect.MapMaker;
import java.util.concurrent.ConcurrentMap;

/**
 * The memory in-memory targets keep, per weight, for the next copy of it a fuse makes: once a
 * fuse into a weight is undone, the copy it was restored from stays here, and the next fuse that
 * touches the weight copies into it (fresh memory costs the kernel a page fault per 4 KiB).
 *
 * <p>Each target made by {@link WeightTarget#of(java.util.Map)} has its own; targets made over the
 * same arrays with one instance ({@link WeightTarget#of(java.util.Map, SpareCopies)}) share it, so
 * that a target made per fuse finds what the last one left and there is never more than one spare
 * per weight. A spare is freed by {@link WeightTarget#trim()}, or with its weight's manager.
 * Thread-safe.
 */
public final class SpareCopies {
  /**
   * By the weight they copy; weak keys compare by identity. An entry goes once the weight's
   * manager is closed and the weight unreachable (while the manager is open, it holds the weight
   * through the spare it also owns).
   */
  private final ConcurrentMap<NDArray, NDArray> spares = new MapMaker().weakKeys().makeMap();

  private SpareCopies() {}

  /** An empty set of spares. */
  public static SpareCopies create() {
    return new SpareCopies();
  }

  /** Takes the spare of {@code weight}, if any. */
  NDArray take(NDArray weight) {
    return spares.remove(weight);
  }

  /** Keeps {@code spare} for {@code weight}, freeing one another target may have left meanwhile. */
  void keep(NDArray weight, NDArray spare) {
    NDArray previous = spares.put(weight, spare);
    if (previous != null) {
      previous.close();
    }
  }

  /** Whether a spare is kept for {@code weight}. */
  boolean has(NDArray weight) {
    return spares.containsKey(weight);
  }

  @Override
  public String toString() {
    return "SpareCopies{" + spares.size() + "}";
  }
}

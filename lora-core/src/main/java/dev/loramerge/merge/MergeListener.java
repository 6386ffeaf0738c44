package dev.loramerge.merge;

import dev.loramerge.ModuleKey;

/** Hears about a merge's or a fuse's progress; called from worker threads, so implementations must be thread-safe. */
@FunctionalInterface
public interface MergeListener {
  /** A listener that ignores everything. */
  MergeListener NONE = (done, total, key) -> {};

  /** Module {@code key} is merged; {@code done} of {@code total} modules are. */
  void moduleMerged(int done, int total, ModuleKey key);

  /** During a fuse, {@code done} of {@code total} bytes of base weights are written. */
  default void weightsWritten(long done, long total) {}
}

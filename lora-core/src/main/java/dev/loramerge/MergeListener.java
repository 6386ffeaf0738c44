package dev.loramerge;

/** Hears about a merge's progress; called from worker threads, so implementations must be thread-safe. */
@FunctionalInterface
public interface MergeListener {
  /** A listener that ignores everything. */
  MergeListener NONE = (done, total, key) -> {};

  /** Module {@code key} is merged; {@code done} of {@code total} modules are. */
  void moduleMerged(int done, int total, ModuleKey key);
}

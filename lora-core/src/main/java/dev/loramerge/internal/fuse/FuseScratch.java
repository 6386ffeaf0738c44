package dev.loramerge.internal.fuse;

import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;

/**
 * The block buffers of the fp16/bf16 kernel (about 20 MiB a block), handed from one block and one
 * weight to the next: fusing a model would otherwise allocate and zero tens of gigabytes of
 * short-lived arrays. As many are made as blocks ever ran at once, and kept as long as this is
 * (a fuser keeps one for all its fuses). Not thread-locals: on JDK 17 the pool's workers drop
 * theirs after every task, which made one set of buffers per block. Thread-safe.
 */
public final class FuseScratch {
  private final ConcurrentLinkedDeque<NarrowFusion.Scratch> free = new ConcurrentLinkedDeque<>();

  /** A buffer set for blocks of {@code elements}. */
  NarrowFusion.Scratch take(int elements) {
    NarrowFusion.Scratch scratch = free.pollFirst();
    return scratch != null ? scratch : new NarrowFusion.Scratch(elements);
  }

  /** Returns a buffer set from {@link #take} for the next block. */
  void give(NarrowFusion.Scratch scratch) {
    free.offerFirst(scratch);
  }

  /**
   * How many tasks the current thread's parallel streams run at once: the parallelism of the
   * fork-join pool it works in (a fuser's own), else the common pool's plus the calling thread.
   */
  public static int parallelism() {
    ForkJoinPool pool = ForkJoinTask.getPool();
    return pool != null ? pool.getParallelism() : ForkJoinPool.getCommonPoolParallelism() + 1;
  }
}

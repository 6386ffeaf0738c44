package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkState;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.Optional;

/**
 * Staging memory for tensors read and fused ahead of the writer: one direct buffer handed out as
 * consecutive regions and freed in the order they were taken, which is the order the file is
 * written. A fixed number of bytes then holds many small tensors or a few large ones, so the
 * worker can run ahead through a stretch the writer only copies, where a fixed count of buffers
 * each the size of the largest tensor would leave it idle or cost many times the memory.
 *
 * <p>Not thread-safe: one thread takes and frees the regions (the worker only fills them).
 */
final class StagingRing {
  private final ByteBuffer memory;
  /**
   * The regions taken and not yet freed, oldest first, as {start, length, lap}: the lap counts
   * the returns to the start, so that a ring filled to the byte with an empty region last still
   * reads as wrapped.
   */
  private final ArrayDeque<int[]> taken = new ArrayDeque<>();

  StagingRing(int capacity) {
    checkArgument(capacity > 0, "capacity must be positive, got %s", capacity);
    memory = ByteBuffer.allocateDirect(capacity);
  }

  /**
   * The capacity for staging {@code sizes}: all of them when they fit in {@code budget} bytes or
   * in three of the largest, else the larger of those two, so that the worker can always fuse at
   * least the two next tensors while the writer writes a third.
   */
  static int capacityFor(long[] sizes, long budget) {
    long total = 0;
    long largest = 1;
    for (long size : sizes) {
      total += size;
      largest = Math.max(largest, size);
    }
    long wanted = Math.min(total, Math.max(budget, 3 * largest));
    return Math.toIntExact(Math.max(largest, Math.min(wanted, Integer.MAX_VALUE)));
  }

  int capacity() {
    return memory.capacity();
  }

  /**
   * A little-endian region of exactly {@code size} bytes, or empty while it does not fit beside
   * the regions still taken. A region is always taken when none is.
   */
  Optional<ByteBuffer> take(int size) {
    checkArgument(size >= 0 && size <= capacity(), "%s bytes do not fit in a staging ring of %s", size, capacity());
    int start;
    int lap = 0;
    if (!taken.isEmpty()) {
      int[] first = taken.peekFirst();
      int[] last = taken.peekLast();
      int end = last[0] + last[1];
      lap = last[2];
      if (last[2] != first[2]) {
        if (first[0] - end < size) {
          return Optional.empty();
        }
        start = end;
      } else if (capacity() - end >= size) {
        start = end;
      } else if (first[0] >= size) {
        start = 0;
        lap++;
      } else {
        return Optional.empty();
      }
    } else {
      start = 0;
    }
    taken.addLast(new int[] {start, size, lap});
    return Optional.of(memory.slice(start, size).order(ByteOrder.LITTLE_ENDIAN));
  }

  /** Frees the oldest region still taken. */
  void free() {
    checkState(!taken.isEmpty(), "no staging region is taken");
    taken.removeFirst();
  }

  /** The number of regions taken and not yet freed. */
  int taken() {
    return taken.size();
  }
}

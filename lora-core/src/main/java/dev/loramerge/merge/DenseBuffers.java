package dev.loramerge.merge;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.ConcurrentLinkedDeque;

/**
 * Native buffers for dense updates given as values, handed from one module to the next for
 * one merge or fuse: a fresh direct buffer per module is zeroed and faulted in page by page, and
 * freed only by a collection (gigabytes for the {@code *_svd} methods on SDXL).
 */
final class DenseBuffers {
  private final ConcurrentLinkedDeque<ByteBuffer> free = new ConcurrentLinkedDeque<>();

  /** A buffer of at least {@code bytes}, for {@link #holding}. */
  ByteBuffer take(int bytes) {
    ByteBuffer buffer = free.pollFirst();
    return buffer == null || buffer.capacity() < bytes ? ByteBuffer.allocateDirect(bytes) : buffer;
  }

  /** A native-order view of the start of {@code buffer} holding {@code values}. */
  static ByteBuffer holding(ByteBuffer buffer, float[] values) {
    ByteBuffer view = buffer.duplicate().clear().limit(values.length * Float.BYTES).slice().order(ByteOrder.nativeOrder());
    view.asFloatBuffer().put(values);
    return view;
  }

  /** Returns a buffer from {@link #take}; nothing may use it afterwards. */
  void give(ByteBuffer buffer) {
    free.offerFirst(buffer);
  }
}

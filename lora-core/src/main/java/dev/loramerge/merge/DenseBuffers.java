package dev.loramerge.merge;

import ai.djl.Device;
import dev.loramerge.internal.fuse.HostPinning;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * Native buffers for dense updates given as values, handed from one module to the next for
 * one merge or fuse: a fresh direct buffer per module is zeroed and faulted in page by page, and
 * freed only by a collection (gigabytes for the {@code *_svd} methods on SDXL). For a merge on a
 * GPU they are pinned where the CUDA kernels are loaded (every dense update is copied to the
 * device from them, 8.8 GB per {@code ties_svd} merge of SDXL), and unpinned by {@link #close}.
 */
final class DenseBuffers implements AutoCloseable {
  private final Device device;
  private final ConcurrentLinkedDeque<ByteBuffer> free = new ConcurrentLinkedDeque<>();
  /** Every buffer pinned, including those dropped for being too small, until {@link #close}. */
  private final ConcurrentLinkedQueue<ByteBuffer> pinned = new ConcurrentLinkedQueue<>();

  /** Buffers that are never pinned. */
  DenseBuffers() {
    this(Device.cpu());
  }

  /** Buffers pinned for copies to {@code device} where it is a GPU and the kernels are loaded. */
  DenseBuffers(Device device) {
    this.device = device;
  }

  /** A buffer of at least {@code bytes}, for {@link #holding}. */
  ByteBuffer take(int bytes) {
    ByteBuffer buffer = free.pollFirst();
    if (buffer != null && buffer.capacity() >= bytes) {
      return buffer;
    }
    ByteBuffer fresh = ByteBuffer.allocateDirect(bytes);
    if (HostPinning.pin(fresh, device)) {
      pinned.add(fresh);
    }
    return fresh;
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

  /** Unpins the buffers pinned; the arrays made from them must be closed first. */
  @Override
  public void close() {
    for (ByteBuffer buffer = pinned.poll(); buffer != null; buffer = pinned.poll()) {
      HostPinning.unpin(buffer);
    }
  }
}

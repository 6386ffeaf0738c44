package dev.loramerge.internal.fuse;

import ai.djl.Device;
import java.nio.ByteBuffer;

/**
 * Page-locks host buffers that are copied to a GPU many times, through the CUDA kernels' library
 * where it is loaded: copies from pageable memory go through the driver's staging buffers at a
 * fraction of the bus's speed.
 */
public final class HostPinning {
  private HostPinning() {}

  /**
   * Pins {@code buffer} (direct) where the kernels are loaded and {@code device} is a GPU; false
   * otherwise or where CUDA refuses. A pinned buffer must be {@linkplain #unpin unpinned} before
   * it is dropped.
   */
  public static boolean pin(ByteBuffer buffer, Device device) {
    return CudaKernels.pin(buffer, device);
  }

  /** Unpins a buffer {@link #pin} pinned; a refusal is logged. */
  public static void unpin(ByteBuffer buffer) {
    CudaKernels.unpin(buffer);
  }
}

package dev.loramerge.internal.fuse;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;

/**
 * The randomized SVD's batched products on a GPU with the bits of {@code OrderedProducts} on the
 * host ({@code orderedProduct} in {@code gpu/kernels/loramerge_cuda.cu}): each entry the chain of
 * fused multiply-adds in increasing inner index from +0, where cuBLAS would block and reorder the
 * sums, so that a dense merge re-ranked on the GPU gives the CPU's bytes.
 *
 * <p>Public only for {@code dev.loramerge.internal.linalg}; not an API.
 */
public final class OrderedKernels {
  /**
   * The system property that, set to true, has the products on a GPU be libtorch's (cuBLAS) even
   * where these kernels are loaded: faster, but the factors then differ from the CPU's in the last
   * bits. Read at every batch.
   */
  public static final String LIBTORCH_PROPERTY = "loramerge.cuda.libtorchProducts";

  private OrderedKernels() {}

  /** Whether the kernels are loaded and run on {@code device}, and {@value #LIBTORCH_PROPERTY} is not set. */
  public static boolean available(Device device) {
    return CudaKernels.available(device) && !Boolean.getBoolean(LIBTORCH_PROPERTY);
  }

  /**
   * A·B for each matrix of a batch, float32 or float64 as both are: A count×rows×inner (or
   * rows×inner, shared), B count×inner×cols (or inner×cols, shared); a new count×rows×cols array
   * in {@code manager}. Every array contiguous, on the device.
   *
   * @throws IllegalStateException where the kernels cannot address an array
   */
  public static NDArray times(NDManager manager, NDArray a, NDArray b, int count) {
    Shape aShape = a.getShape();
    Shape bShape = b.getShape();
    int rows = dim(aShape, 2);
    int inner = dim(aShape, 1);
    int cols = dim(bShape, 1);
    NDArray out = manager.create(new Shape(count, rows, cols), a.getDataType());
    queue(a, b, out, false, count, rows, inner, cols);
    return out;
  }

  /**
   * Aᵀ·B for each matrix of a batch: A count×rows×cols, B count×rows×width (either may be shared,
   * of two dimensions); a new count×cols×width array in {@code manager}.
   *
   * @throws IllegalStateException where the kernels cannot address an array
   */
  public static NDArray transposeTimes(NDManager manager, NDArray a, NDArray b, int count) {
    int inner = dim(a.getShape(), 2);
    int cols = dim(a.getShape(), 1);
    int width = dim(b.getShape(), 1);
    NDArray out = manager.create(new Shape(count, cols, width), a.getDataType());
    queue(a, b, out, true, count, cols, inner, width);
    return out;
  }

  private static void queue(NDArray a, NDArray b, NDArray out, boolean transposeA, int count, int rows, int inner, int cols) {
    if (!CudaKernels.orderedProduct(a, b, out, transposeA, count, rows, inner, cols)) {
      throw new IllegalStateException("the ordered product kernels cannot address an array of shape " + a.getShape()
          + " or " + b.getShape());
    }
  }

  /** Dimension {@code fromEnd} counted from the last (1 the last). */
  private static int dim(Shape shape, int fromEnd) {
    return Math.toIntExact(shape.get(shape.dimension() - fromEnd));
  }
}

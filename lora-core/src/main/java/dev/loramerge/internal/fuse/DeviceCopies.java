package dev.loramerge.internal.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import java.util.ArrayList;
import java.util.List;

/**
 * Copies between arrays on one device: the originals a fuse keeps of GPU weights, and their
 * restores. Where the CUDA kernels run ({@link CudaKernels}), all of a call's copies are queued on
 * the device's stream by one native call; libtorch takes a call, an index and a dispatch for each,
 * about 13 µs a weight on an H200 host (a restore of SDXL's 722 attention weights took 9 ms).
 * Elsewhere, and for arrays the kernels cannot address, each copy is libtorch's.
 */
public final class DeviceCopies {
  private DeviceCopies() {}

  /** Sets every {@code targets[i]} to {@code sources[i]}, of the same shape and dtype, on one device. */
  public static void copy(List<NDArray> sources, List<NDArray> targets) {
    checkArgument(sources.size() == targets.size(), "%s sources for %s targets", sources.size(), targets.size());
    if (CudaKernels.copies(sources, targets)) {
      return;
    }
    for (int i = 0; i < sources.size(); i++) {
      targets.get(i).set(new NDIndex("..."), sources.get(i));
    }
  }

  /** A copy of each array, on its device, belonging to its manager. */
  public static List<NDArray> duplicates(List<NDArray> arrays) {
    if (!arrays.isEmpty() && CudaKernels.available(arrays.get(0).getDevice())) {
      List<NDArray> copies = new ArrayList<>(arrays.size());
      try {
        for (NDArray array : arrays) {
          copies.add(array.getManager().create(array.getShape(), array.getDataType(), array.getDevice()));
        }
        if (CudaKernels.copies(arrays, copies)) {
          return copies;
        }
      } catch (RuntimeException e) {
        copies.forEach(NDArray::close);
        throw e;
      }
      copies.forEach(NDArray::close);
    }
    return arrays.stream().map(NDArray::duplicate).toList();
  }
}

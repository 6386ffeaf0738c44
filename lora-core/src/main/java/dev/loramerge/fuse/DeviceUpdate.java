package dev.loramerge.fuse;

import ai.djl.ndarray.NDArray;
import dev.loramerge.TensorSpec;
import dev.loramerge.internal.fuse.FactorCache;
import java.util.List;

/**
 * A {@link WeightUpdate} that can also be computed where the weight lives, with the weight's
 * device doing the arithmetic, and gives there the same bytes as {@link #apply}.
 */
interface DeviceUpdate extends WeightUpdate {
  /**
   * Sets {@code weight}, the array of the weight {@code spec} names, to {@code source} plus this
   * update, rounded once; {@code source} is the weight itself or a copy of its original, on its
   * device or in host memory. Nothing leaves the weight's device but a few scalars; when this
   * throws, {@code weight} is unchanged.
   *
   * @throws IllegalArgumentException if this update does not rewrite the weight {@code spec} names
   * @throws dev.loramerge.LoraMergeException if a result is not finite or beyond the dtype's range
   */
  void applyOnDevice(TensorSpec spec, NDArray source, NDArray weight);

  /**
   * {@link #applyOnDevice} for every weight in {@code specs}, each from its own current values,
   * as few libtorch calls as the update can make it: weights of one device, dtype and shape go
   * together; factors the update stores as its adapters do are read from {@code factors} where
   * it keeps them on the device, and kept there where it has room. When this throws, the weights
   * are in an unspecified state (fused or not), and the caller restores them.
   *
   * @throws dev.loramerge.LoraMergeException if a result is not finite or beyond the dtype's range
   */
  default void applyAllOnDevice(List<TensorSpec> specs, List<NDArray> weights, FactorCache factors) {
    for (int i = 0; i < specs.size(); i++) {
      applyOnDevice(specs.get(i), weights.get(i), weights.get(i));
    }
  }

  /**
   * Whether the weight {@code spec} names is computed on its device by {@link #applyOnDevice};
   * when not, a target computes it on the host with {@link #apply}.
   */
  default boolean onDevice(TensorSpec spec) {
    return true;
  }
}

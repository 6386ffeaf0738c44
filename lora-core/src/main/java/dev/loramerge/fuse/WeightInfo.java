package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import java.util.Arrays;

/**
 * The element type and shape of one base weight in a {@link WeightTarget}.
 *
 * @param dtype the element type
 * @param shape the dimensions, none negative; copied on the way in and out
 */
public record WeightInfo(DType dtype, long[] shape) {
  /** Validates and copies. */
  public WeightInfo {
    checkNotNull(dtype, "dtype");
    shape = checkNotNull(shape, "shape").clone();
    for (long dim : shape) {
      checkArgument(dim >= 0, "shape %s has a negative dimension", Arrays.toString(shape));
    }
  }

  @Override
  public long[] shape() {
    return shape.clone();
  }

  /** The number of elements. */
  public long numel() {
    return TensorData.numel(shape);
  }

  /** The size of the weight's data in bytes. */
  public long byteSize() {
    return numel() * dtype.byteSize();
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof WeightInfo that && dtype == that.dtype && Arrays.equals(shape, that.shape);
  }

  @Override
  public int hashCode() {
    return dtype.hashCode() * 31 + Arrays.hashCode(shape);
  }

  @Override
  public String toString() {
    return dtype.safetensorsName() + Arrays.toString(shape);
  }
}

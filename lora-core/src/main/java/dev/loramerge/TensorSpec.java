package dev.loramerge;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.base.Strings;
import java.util.Arrays;
import java.util.Locale;

/**
 * A named tensor's layout without its values: name, element type and shape. One type describes a
 * weight of a fuse target, a tensor of a safetensors file being read, and a tensor of a layout
 * being written, so that a layout read from one place can be written to another unchanged.
 *
 * <p>Instances are immutable and thread-safe: the shape is copied on the way in and out, and two
 * specs are equal when their names, dtypes and shapes are, the shapes compared element by element.
 * The constructor guarantees that {@link #byteSize} fits in a {@code long}.
 *
 * @param name the tensor's name
 * @param dtype the element type
 * @param shape the dimensions, each {@code >= 0}; {@code []} is a scalar
 */
public record TensorSpec(String name, DType dtype, long[] shape) {
  /**
   * Checks and copies the components.
   *
   * @throws IllegalArgumentException if a dimension is negative or the byte count does not fit in
   *     a {@code long}
   */
  public TensorSpec {
    checkNotNull(name, "name");
    checkNotNull(dtype, "dtype");
    shape = checkNotNull(shape, "shape").clone();
    for (long dim : shape) {
      if (dim < 0) {
        throw new IllegalArgumentException(
            Strings.lenientFormat("tensor '%s' has a negative dimension in %s", name, Arrays.toString(shape)));
      }
    }
    try {
      Math.multiplyExact(TensorData.numel(shape), dtype.byteSize());
    } catch (ArithmeticException e) {
      throw new IllegalArgumentException(
          String.format(
              Locale.ROOT,
              "tensor '%s' size of %s %s overflows 64 bits",
              name,
              dtype.safetensorsName(),
              Arrays.toString(shape)),
          e);
    }
  }

  /** The spec of a tensor {@code name} with the dtype and shape of {@code tensor}. */
  public static TensorSpec of(String name, TensorData tensor) {
    checkNotNull(tensor, "tensor");
    return new TensorSpec(name, tensor.dtype(), tensor.shape());
  }

  /** A copy of the shape. */
  @Override
  public long[] shape() {
    return shape.clone();
  }

  /** The number of elements. */
  public long numel() {
    return TensorData.numel(shape);
  }

  /** The size of the tensor's values in bytes. */
  public long byteSize() {
    return numel() * dtype.byteSize();
  }


  /** Equal when every component is equal, the shape compared element by element. */
  @Override
  public boolean equals(Object other) {
    return other instanceof TensorSpec that
        && name.equals(that.name)
        && dtype == that.dtype
        && Arrays.equals(shape, that.shape);
  }

  @Override
  public int hashCode() {
    return 31 * (31 * name.hashCode() + dtype.hashCode()) + Arrays.hashCode(shape);
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "TensorSpec[name=%s, dtype=%s, shape=%s]",
        name,
        dtype.safetensorsName(),
        Arrays.toString(shape));
  }
}

package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import java.util.Arrays;
import java.util.Locale;

/**
 * One tensor entry of a safetensors header: name, element type, shape and the byte range {@code
 * [begin, end)} it occupies, counted from the start of the data section (the first byte after the
 * header).
 *
 * <p>Instances are immutable and thread-safe: the shape is copied on the way in and out. The
 * constructor guarantees {@code 0 <= begin <= end} and {@code end - begin == numel(shape) ×
 * dtype.byteSize()}.
 *
 * @param name the tensor's name in the header
 * @param dtype the element type
 * @param shape the dimensions, each {@code >= 0}; {@code []} is a scalar
 * @param begin first byte, relative to the data section
 * @param end one past the last byte, relative to the data section
 */
public record TensorInfo(String name, DType dtype, long[] shape, long begin, long end) {
  /**
   * Checks and copies the components.
   *
   * @throws IllegalArgumentException if a dimension is negative, the byte count overflows a {@code
   *     long}, the offsets are not {@code 0 <= begin <= end}, or the range does not hold exactly
   *     the tensor's bytes
   */
  public TensorInfo {
    checkNotNull(name, "name");
    checkNotNull(dtype, "dtype");
    shape = checkNotNull(shape, "shape").clone();
    long needed = checkedByteSize(name, dtype, shape);
    checkArgument(
        0 <= begin && begin <= end,
        "tensor '%s' data_offsets [%s, %s) are not 0 <= begin <= end",
        name,
        begin,
        end);
    checkArgument(
        end - begin == needed,
        "tensor '%s' data_offsets [%s, %s) hold %s bytes but %s %s needs %s bytes",
        name,
        begin,
        end,
        end - begin,
        dtype.safetensorsName(),
        Arrays.toString(shape),
        needed);
  }

  /** A copy of the shape. */
  @Override
  public long[] shape() {
    return shape.clone();
  }

  /** Number of bytes, {@code end - begin}. */
  public long byteSize() {
    return end - begin;
  }

  /**
   * Bytes the tensor {@code name} of {@code dtype} and {@code shape} needs.
   *
   * @throws IllegalArgumentException if a dimension is negative or the count does not fit in a
   *     {@code long}
   */
  static long checkedByteSize(String name, DType dtype, long[] shape) {
    for (long dim : shape) {
      checkArgument(
          dim >= 0, "tensor '%s' has a negative dimension in %s", name, Arrays.toString(shape));
    }
    try {
      return byteSize(dtype, shape);
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

  /**
   * Bytes a tensor of {@code dtype} and {@code shape} (non-negative dimensions) needs.
   *
   * @throws ArithmeticException if the count does not fit in a {@code long}
   */
  static long byteSize(DType dtype, long[] shape) {
    return Math.multiplyExact(TensorData.numel(shape), dtype.byteSize());
  }

  /** Equal when every component is equal, the shape compared element by element. */
  @Override
  public boolean equals(Object other) {
    return other instanceof TensorInfo that
        && name.equals(that.name)
        && dtype == that.dtype
        && Arrays.equals(shape, that.shape)
        && begin == that.begin
        && end == that.end;
  }

  @Override
  public int hashCode() {
    int result = name.hashCode();
    result = 31 * result + dtype.hashCode();
    result = 31 * result + Arrays.hashCode(shape);
    result = 31 * result + Long.hashCode(begin);
    return 31 * result + Long.hashCode(end);
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "TensorInfo[name=%s, dtype=%s, shape=%s, begin=%d, end=%d]",
        name,
        dtype.safetensorsName(),
        Arrays.toString(shape),
        begin,
        end);
  }
}

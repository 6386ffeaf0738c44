package dev.loramerge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.google.common.base.Strings;
import dev.loramerge.internal.linalg.NdArrays;
import dev.loramerge.internal.numeric.FloatFormats;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.Locale;

/**
 * An immutable tensor: element type, shape and little-endian bytes.
 *
 * <p>The bytes may be a read-only memory mapping of a file, so a tensor costs nothing until its
 * values are read. Every accessor copies or returns a read-only view; nothing here ever writes
 * to the backing buffer, and {@link #toNDArray} copies before handing data to DJL (PyTorch
 * aliases direct buffers, and an in-place operation on a read-only mapping crashes the JVM).
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class TensorData {
  private final DType dtype;
  private final long[] shape;
  private final ByteBuffer bytes;

  private TensorData(DType dtype, long[] shape, ByteBuffer bytes) {
    this.dtype = dtype;
    this.shape = shape;
    this.bytes = bytes;
  }

  /**
   * A tensor over {@code bytes} (from its position to its limit), which must hold exactly
   * numel(shape) × dtype size bytes. The buffer is not copied; the caller must not change it.
   */
  public static TensorData of(DType dtype, long[] shape, ByteBuffer bytes) {
    checkNotNull(dtype, "dtype");
    checkNotNull(bytes, "bytes");
    long[] shapeCopy = shape.clone();
    long expected = Math.multiplyExact(numel(shapeCopy), dtype.byteSize());
    if (bytes.remaining() != expected) {
      throw new IllegalArgumentException(
          Strings.lenientFormat(
              "%s %s needs %s bytes, got %s",
              dtype.safetensorsName(), Arrays.toString(shapeCopy), expected, bytes.remaining()));
    }
    return new TensorData(
        dtype, shapeCopy, bytes.slice().asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN));
  }

  /** A float32 tensor holding a copy of {@code values}. */
  public static TensorData ofFloats(float[] values, long... shape) {
    if (values.length != numel(shape)) {
      throw new IllegalArgumentException(
          Strings.lenientFormat("%s values do not fill shape %s", values.length, Arrays.toString(shape)));
    }
    ByteBuffer buffer = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
    buffer.asFloatBuffer().put(values);
    return new TensorData(DType.F32, shape.clone(), buffer.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN));
  }

  /**
   * A tensor of type {@code dtype} (F64, F32, F16 or BF16) holding {@code values}, each rounded
   * once to nearest even (values too large for {@code dtype} become infinite).
   */
  public static TensorData ofFloats(float[] values, DType dtype, long... shape) {
    checkArgument(dtype.isFloatingPoint() && dtype.byteSize() >= 2, "cannot encode %s from real values", dtype);
    if (values.length != numel(shape)) {
      throw new IllegalArgumentException(
          Strings.lenientFormat("%s values do not fill shape %s", values.length, Arrays.toString(shape)));
    }
    if (dtype == DType.F32) {
      return ofFloats(values, shape);
    }
    ByteBuffer buffer =
        ByteBuffer.allocate(Math.multiplyExact(values.length, dtype.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
    FloatFormats.encode(dtype, values, values.length, buffer, 0);
    return new TensorData(dtype, shape.clone(), buffer.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN));
  }

  /**
   * A tensor of type {@code dtype} holding {@code values}, each rounded once to nearest even
   * (values too large for {@code dtype} become infinite; for float8 e4m3fn, which has no
   * infinity, NaN).
   */
  public static TensorData ofDoubles(double[] values, DType dtype, long... shape) {
    checkArgument(dtype.isFloatingPoint(), "cannot encode %s from real values", dtype);
    if (values.length != numel(shape)) {
      throw new IllegalArgumentException(
          Strings.lenientFormat("%s values do not fill shape %s", values.length, Arrays.toString(shape)));
    }
    ByteBuffer buffer =
        ByteBuffer.allocate(Math.multiplyExact(values.length, dtype.byteSize()))
            .order(ByteOrder.LITTLE_ENDIAN);
    switch (dtype) {
      case F64 -> buffer.asDoubleBuffer().put(values);
      case F32 -> {
        FloatBuffer floats = buffer.asFloatBuffer();
        for (double value : values) {
          floats.put((float) value);
        }
      }
      case F16, BF16 -> FloatFormats.narrow(dtype == DType.F16, values, buffer);
      case F8_E4M3 -> {
        for (int i = 0; i < values.length; i++) {
          buffer.put(i, FloatFormats.toFloat8E4M3(values[i]));
        }
      }
      case F8_E5M2 -> {
        for (int i = 0; i < values.length; i++) {
          buffer.put(i, FloatFormats.toFloat8E5M2(values[i]));
        }
      }
      default -> throw new AssertionError(dtype);
    }
    return new TensorData(dtype, shape.clone(), buffer.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN));
  }

  /** The element type. */
  public DType dtype() {
    return dtype;
  }

  /** A copy of the shape. */
  public long[] shape() {
    return shape.clone();
  }

  /** Size of dimension {@code axis}. */
  public long dim(int axis) {
    return shape[axis];
  }

  /** Number of dimensions. */
  public int rank() {
    return shape.length;
  }

  /** Number of elements. */
  public long numel() {
    return numel(shape);
  }

  /** Number of bytes. */
  public long byteSize() {
    return bytes.capacity();
  }

  /** A read-only little-endian view of the bytes, positioned at 0. */
  public ByteBuffer bytes() {
    return bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN);
  }

  /** The same bytes seen with another shape of the same element count. */
  public TensorData reshape(long... newShape) {
    if (numel(newShape) != numel(shape)) {
      throw new IllegalArgumentException(
          Strings.lenientFormat("cannot reshape %s to %s", Arrays.toString(shape), Arrays.toString(newShape)));
    }
    return new TensorData(dtype, newShape.clone(), bytes);
  }

  /** The values as doubles (exact for every floating-point type; integers converted). */
  public double[] toDoubleArray() {
    int count = Math.toIntExact(numel());
    double[] values = new double[count];
    readDoubles(0, values, count);
    return values;
  }

  /** The values as floats (rounded where the type is wider than float32). */
  public float[] toFloatArray() {
    int count = Math.toIntExact(numel());
    float[] values = new float[count];
    readFloats(0, values, count);
    return values;
  }

  /**
   * Elements {@code [first, first + count)} (row-major) as floats into {@code out[0, count)},
   * rounded where the type is wider than float32.
   */
  public void readFloats(int first, float[] out, int count) {
    ByteBuffer in = bytes();
    if (dtype == DType.F32) {
      in.asFloatBuffer().get(first, out, 0, count);
    } else if (dtype == DType.F16 || dtype == DType.BF16) {
      FloatFormats.widen(dtype == DType.F16, in, first, out, count);
    } else {
      for (int i = 0; i < count; i++) {
        out[i] = (float) readAsDouble(in, first + i);
      }
    }
  }

  /**
   * Elements {@code [first, first + count)} (row-major) as doubles into {@code out[0, count)},
   * exactly for every floating-point type.
   */
  public void readDoubles(int first, double[] out, int count) {
    if (dtype == DType.F32 || dtype == DType.F16 || dtype == DType.BF16) {
      // Widened in bulk to float32 first, exactly; element by element this runs at a few ns each.
      float[] single = new float[count];
      readFloats(first, single, count);
      for (int i = 0; i < count; i++) {
        out[i] = single[i];
      }
      return;
    }
    ByteBuffer in = bytes();
    for (int i = 0; i < count; i++) {
      out[i] = readAsDouble(in, first + i);
    }
  }

  /** Element {@code index} (row-major) as a double. */
  public double getDouble(long index) {
    return readAsDouble(bytes, Math.toIntExact(index));
  }

  /** This tensor converted to {@code target}, rounding each value once. */
  public TensorData to(DType target) {
    if (target == dtype) {
      return this;
    }
    return ofDoubles(toDoubleArray(), target, shape);
  }

  /**
   * A new float32 NDArray owned by {@code manager} with a copy of the values; the caller closes
   * it (or its manager).
   */
  public NDArray toNDArray(NDManager manager) {
    return NdArrays.float32(manager, this, shape);
  }

  private double readAsDouble(ByteBuffer in, int index) {
    switch (dtype) {
      case F64:
        return in.getDouble(index * 8);
      case F32:
        return in.getFloat(index * 4);
      case F16:
        return FloatFormats.fromFloat16(in.getShort(index * 2));
      case BF16:
        return FloatFormats.fromBFloat16(in.getShort(index * 2));
      case F8_E4M3:
        return FloatFormats.fromFloat8E4M3(in.get(index));
      case F8_E5M2:
        return FloatFormats.fromFloat8E5M2(in.get(index));
      case I64:
        return in.getLong(index * 8);
      case I32:
        return in.getInt(index * 4);
      case I16:
        return in.getShort(index * 2);
      case I8:
        return in.get(index);
      case U8:
      case BOOL:
        return in.get(index) & 0xff;
      default:
        throw new AssertionError(dtype);
    }
  }

  /** Elements in a tensor of {@code shape}, with overflow checked. */
  public static long numel(long[] shape) {
    long count = 1;
    for (long dim : shape) {
      if (dim < 0) {
        throw new IllegalArgumentException(
            Strings.lenientFormat("negative dimension in %s", Arrays.toString(shape)));
      }
      count = Math.multiplyExact(count, dim);
    }
    return count;
  }

  /** Equal when dtype, shape and bytes are equal. */
  @Override
  public boolean equals(Object other) {
    if (!(other instanceof TensorData)) {
      return false;
    }
    TensorData that = (TensorData) other;
    return dtype == that.dtype && Arrays.equals(shape, that.shape) && bytes().equals(that.bytes());
  }

  @Override
  public int hashCode() {
    return 31 * (31 * dtype.hashCode() + Arrays.hashCode(shape)) + bytes().hashCode();
  }

  @Override
  public String toString() {
    return String.format(Locale.ROOT, "%s %s", dtype.safetensorsName(), Arrays.toString(shape));
  }
}

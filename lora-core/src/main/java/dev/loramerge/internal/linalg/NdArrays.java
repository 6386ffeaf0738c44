package dev.loramerge.internal.linalg;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.internal.fuse.Fusion;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.stream.IntStream;
import org.ejml.data.DMatrixRMaj;

/** Conversions between NDArrays, {@link TensorData} and EJML matrices. */
public final class NdArrays {
  /** Bytes a task of {@link #copyInParallel} copies. */
  private static final int COPY_CHUNK = 1 << 22;

  private NdArrays() {}

  /**
   * Copies {@code source}'s remaining bytes into {@code target} from its position, in 4 MiB
   * chunks on the common pool: copying into fresh memory is bound by the kernel's zeroing of
   * each page on first touch, which one thread does at a few GB/s. Neither buffer's position moves.
   */
  public static void copyInParallel(ByteBuffer source, ByteBuffer target) {
    int length = source.remaining();
    if (target.remaining() < length) {
      throw new IllegalArgumentException(
          "cannot copy " + length + " bytes into a buffer of " + target.remaining());
    }
    int from = source.position();
    int to = target.position();
    IntStream.range(0, (length + COPY_CHUNK - 1) / COPY_CHUNK)
        .parallel()
        .forEach(
            chunk -> {
              int offset = chunk * COPY_CHUNK;
              target.put(to + offset, source, from + offset, Math.min(COPY_CHUNK, length - offset));
            });
  }

  /** A float64 R×C NDArray owned by {@code manager} with {@code matrix}'s values. */
  public static NDArray fromMatrix(NDManager manager, DMatrixRMaj matrix) {
    return manager.create(matrix.data.clone(), new Shape(matrix.numRows, matrix.numCols));
  }

  /** A 2-D NDArray's values as an EJML matrix (copied, float64). */
  public static DMatrixRMaj toMatrix(NDArray array) {
    long[] shape = array.getShape().getShape();
    double[] values = array.getDataType() == DataType.FLOAT64 ? array.toDoubleArray() : array.toType(DataType.FLOAT64, false).toDoubleArray();
    return DMatrixRMaj.wrap(Math.toIntExact(shape[0]), Math.toIntExact(shape[1]), values);
  }

  /**
   * The values of {@code array} as a tensor of {@code dtype} and {@code shape}, rounded once from
   * the array's own precision.
   */
  public static TensorData toTensor(NDArray array, DType dtype, long... shape) {
    if (array.getDataType() == DataType.FLOAT16 && dtype == DType.F16) {
      return TensorData.of(dtype, shape, array.toByteBuffer());
    }
    boolean computable =
        array.getDataType() == DataType.FLOAT32 || array.getDataType() == DataType.FLOAT64;
    if (computable && ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN && dtype.isFloatingPoint() && dtype.byteSize() >= 2) {
      return TensorData.of(dtype, shape, Fusion.rounded(array.getManager(), array, dtype));
    }
    double[] values = array.getDataType() == DataType.FLOAT64 ? array.toDoubleArray() : array.toType(DataType.FLOAT64, false).toDoubleArray();
    return TensorData.ofDoubles(values, dtype, shape);
  }

  /** An array of {@code tensor}'s values in its own type (F64, F32 or F16), owned by {@code manager}. */
  public static NDArray ofOwnType(NDManager manager, TensorData tensor, long... shape) {
    return manager.create(directCopy(tensor.bytes()), new Shape(shape), Fusion.dataTypeOf(tensor.dtype()));
  }

  /**
   * An array's values as float32 in a new Java array, copied once from native memory (DJL's
   * {@code toFloatArray} copies twice, through a byte array).
   */
  public static float[] floatValues(NDArray array) {
    if (array.getDataType() != DataType.FLOAT32) {
      try (NDArray single = array.toType(DataType.FLOAT32, false)) {
        return floatValues(single);
      }
    }
    FloatBuffer native32 = array.toByteBuffer(true).asFloatBuffer();
    float[] values = new float[native32.remaining()];
    native32.get(values);
    return values;
  }

  /** Whether {@code value} is a normal power of two, by which float multiplication is exact. */
  public static boolean isPowerOfTwo(double value) {
    float single = (float) value;
    return single == value
        && Float.isFinite(single)
        && Math.abs(single) >= Float.MIN_NORMAL
        && (Float.floatToRawIntBits(single) & 0x7FFFFF) == 0;
  }

  /**
   * A native-order direct copy of {@code bytes}' remaining bytes: DJL takes a direct buffer's
   * memory as the array's storage, where it would copy a heap buffer into one of its own.
   */
  public static ByteBuffer directCopy(ByteBuffer bytes) {
    ByteBuffer direct = ByteBuffer.allocateDirect(bytes.remaining()).order(ByteOrder.nativeOrder());
    direct.put(bytes.duplicate()).flip();
    return direct;
  }

  /**
   * A float32 array of {@code tensor}'s values in the given shape, owned by {@code manager}. F32,
   * F16 and F64 bytes are copied once and widened by libtorch; other types go through Java.
   */
  public static NDArray float32(NDManager manager, TensorData tensor, long... shape) {
    DType dtype = tensor.dtype();
    if (ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN && (dtype == DType.F32 || dtype == DType.F16 || dtype == DType.F64)) {
      NDArray raw = ofOwnType(manager, tensor, shape);
      return dtype == DType.F32 ? raw : raw.toType(DataType.FLOAT32, false);
    }
    ByteBuffer direct =
        ByteBuffer.allocateDirect(Math.toIntExact(tensor.numel() * 4)).order(ByteOrder.nativeOrder());
    direct.asFloatBuffer().put(tensor.toFloatArray());
    return manager.create(direct, new Shape(shape), DataType.FLOAT32);
  }
}

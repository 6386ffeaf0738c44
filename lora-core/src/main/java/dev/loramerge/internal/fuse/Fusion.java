package dev.loramerge.internal.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.internal.linalg.NdArrays;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.internal.numeric.NonFinite;
import dev.loramerge.internal.numeric.VectorHalves;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.ShortBuffer;
import java.util.Arrays;
import java.util.Locale;
import java.util.function.Supplier;

/**
 * The arithmetic of fusing: {@code W' = W + up·down}, computed in float64 and rounded once to
 * {@code W}'s dtype.
 *
 * <p>fp16 and bf16 weights go through {@link NarrowFusion}, which needs float64 only for the few
 * elements near a rounding boundary. The rest are computed here in float64.
 *
 * <p>libtorch converts float64 to fp16 and bf16 through float32, which rounds twice. The second
 * rounding can only go wrong where the float32 value lies exactly halfway between two neighbours
 * of the narrow format (float32 keeps 13 more bits than fp16, so the first rounding can land on
 * such a tie but never cross one); those elements, and fp16's subnormal range, are found by their
 * bit patterns and rounded again from float64 in Java. The result is the float64 sum rounded once.
 */
public final class Fusion {
  private Fusion() {}

  /**
   * Writes {@code weight + up·down}, rounded once from the float64 sum to {@code dtype}, into
   * {@code into} (little-endian, from its position). {@code weight} holds little-endian bytes of
   * {@code weightType} in the given shape; {@code up} is m×r and {@code down} is r×(numel/m),
   * row-major float64 values, which are not modified. {@code into} may be {@code weight} when the
   * types are equally wide; after a failure its contents are unspecified.
   *
   * <p>fp16 and bf16 weights are fused in Java without a native call ({@link NarrowFusion}, with
   * the Vector API, in blocks whose buffers come from {@code scratches}); the others in libtorch, in
   * arrays of {@code manager}, which is asked for only then.
   *
   * @throws LoraMergeException naming {@code label} when a result is NaN, infinite or beyond the
   *     dtype's range
   */
  public static void fuse(
      FuseScratch scratches,
      Supplier<NDManager> manager,
      ByteBuffer weight,
      DType weightType,
      long[] shape,
      double[] up,
      double[] down,
      int rank,
      ByteBuffer into,
      DType dtype,
      String label) {
    long rows = shape.length == 0 ? 1 : shape[0];
    long numel = weight.remaining() / weightType.byteSize();
    checkArgument(
        rank > 0 && up.length == rows * rank && (long) down.length * rows == numel * rank,
        "%s: factors of %s and %s values do not make a rank-%s update of %s elements in %s rows",
        label, up.length, down.length, rank, numel, rows);
    if (DenseFusion.isFloat8(weightType) || DenseFusion.isFloat8(dtype)) {
      // A float8 weight has a few bits per element: the float64 product is made once in libtorch
      // and the sum is rounded in Java, where float8 can be encoded.
      try (NDManager scratch = manager.get().newSubManager()) {
        double[] delta =
            scratch.create(up, new Shape(rows, rank)).matMul(scratch.create(down, new Shape(rank, down.length / rank)))
                .toDoubleArray();
        DenseFusion.fuse(weight, weightType, values -> {
          for (int i = 0; i < values.length; i++) {
            values[i] += delta[i];
          }
          return values;
        }, into, dtype, label);
      }
      return;
    }
    dataTypeOf(dtype);
    if (NarrowFusion.handles(weightType, dtype, rows, numel)) {
      NarrowFusion.fuse(scratches, manager, weight, weightType, rows, up, down, rank, into, dtype, label);
      return;
    }
    try (NDManager scratch = manager.get().newSubManager()) {
      NDArray base = scratch.create(computable(weight, weightType), new Shape(shape), computeTypeOf(weightType));
      // Adding the weight into the float64 product in place widens it on the fly (exactly: every
      // fusable type fits in float64) and saves a float64 copy of the weight.
      NDArray sum =
          scratch.create(up, new Shape(rows, rank)).matMul(scratch.create(down, new Shape(rank, down.length / rank)))
              .reshape(base.getShape());
      sum.addi(base);
      ByteBuffer bytes = rounded(scratch, sum, dtype);
      bytes.order(ByteOrder.LITTLE_ENDIAN);
      checkFinite(bytes, dtype, sum, label);
      into.duplicate().put(bytes);
    }
  }

  /**
   * Little-endian {@code bytes} of {@code dtype} as a direct buffer of {@link #computeTypeOf}:
   * bf16 widened to float32 exactly.
   */
  private static ByteBuffer computable(ByteBuffer bytes, DType dtype) {
    if (dtype != DType.BF16) {
      return NdArrays.directCopy(bytes);
    }
    short[] narrow = new short[bytes.remaining() / 2];
    bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(narrow);
    int[] widened = new int[narrow.length];
    for (int i = 0; i < narrow.length; i++) {
      widened[i] = narrow[i] << 16;
    }
    ByteBuffer direct = ByteBuffer.allocateDirect(narrow.length * 4).order(ByteOrder.nativeOrder());
    direct.asIntBuffer().put(widened);
    return direct;
  }

  /**
   * The bytes (native order) of a float32 or float64 {@code array} rounded once to {@code dtype}
   * (F64, F32, F16 or BF16). Arrays it creates belong to {@code manager}.
   */
  public static ByteBuffer rounded(NDManager manager, NDArray array, DType dtype) {
    boolean wide = array.getDataType() == DataType.FLOAT64;
    switch (dtype) {
      case F64:
        return array.toType(DataType.FLOAT64, false).toByteBuffer().order(ByteOrder.nativeOrder());
      case F32:
        return array.toType(DataType.FLOAT32, false).toByteBuffer().order(ByteOrder.nativeOrder());
      case F16:
        return wide
            ? roundNarrow(manager, array, dtype)
            : array.toType(DataType.FLOAT16, false).toByteBuffer().order(ByteOrder.nativeOrder());
      case BF16:
        return wide
            ? roundNarrow(manager, array, dtype)
            : toBFloat16(array.toFloatArray());
      default:
        throw new IllegalArgumentException("cannot round to " + dtype.safetensorsName());
    }
  }

  /**
   * The index of the first NaN or infinite element of {@code bytes} (of {@code dtype}), or −1.
   * Scans a bulk copy in a primitive array: indexed ByteBuffer reads ran at ~4 ns an element.
   */
  public static long firstNonFinite(ByteBuffer bytes, DType dtype) {
    return firstNonFinite(bytes, dtype, FloatFormats.VECTOR_API);
  }

  /** {@link #firstNonFinite(ByteBuffer, DType)}, fp16 and bf16 with the Vector API or without. */
  static long firstNonFinite(ByteBuffer bytes, DType dtype, boolean vectorized) {
    ByteBuffer ordered = bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN);
    switch (dtype) {
      case F64: {
        double[] values = new double[ordered.remaining() / 8];
        ordered.asDoubleBuffer().get(values);
        for (int i = 0; i < values.length; i++) {
          if (!Double.isFinite(values[i])) {
            return i;
          }
        }
        return -1;
      }
      case F32: {
        float[] values = new float[ordered.remaining() / 4];
        ordered.asFloatBuffer().get(values);
        for (int i = 0; i < values.length; i++) {
          if (!Float.isFinite(values[i])) {
            return i;
          }
        }
        return -1;
      }
      case F16:
      case BF16: {
        short exponent = (short) (dtype == DType.F16 ? 0x7C00 : 0x7F80);
        int count = ordered.remaining() / 2;
        ByteBuffer elements = ordered.slice().order(ByteOrder.LITTLE_ENDIAN);
        ShortBuffer halves = elements.asShortBuffer();
        // A chunk at a time, each checked four elements to a long; only a chunk that has one is
        // searched element by element.
        short[] chunk = new short[Math.min(count, 1 << 13)];
        for (int first = 0; first < count; first += chunk.length) {
          int length = Math.min(chunk.length, count - first);
          if (!NonFinite.any(elements, first, length, dtype == DType.F16)) {
            continue;
          }
          halves.get(first, chunk, 0, length);
          for (int i = vectorized ? VectorHalves.nonFiniteSearchStart(chunk, length, exponent) : 0; i < length; i++) {
            if ((chunk[i] & exponent) == exponent) {
              return first + i;
            }
          }
        }
        return -1;
      }
      case F8_E4M3:
      case F8_E5M2: {
        // e4m3fn's only non-finite codes are its NaNs, 0x7f and 0xff; e5m2's all-ones exponent
        // is fp16's.
        int mask = dtype == DType.F8_E4M3 ? 0x7f : 0x7c;
        for (int i = 0; i < ordered.remaining(); i++) {
          if ((ordered.get(ordered.position() + i) & mask) == mask) {
            return i;
          }
        }
        return -1;
      }
      default:
        throw new IllegalArgumentException("no finiteness check for " + dtype.safetensorsName());
    }
  }

  /** The DType of a DJL data type that can be fused into. */
  public static DType dtypeOf(DataType type, String label) {
    switch (type) {
      case FLOAT64:
        return DType.F64;
      case FLOAT32:
        return DType.F32;
      case FLOAT16:
        return DType.F16;
      case BFLOAT16:
        return DType.BF16;
      default:
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "%s: cannot fuse into a weight of type %s; expected F64, F32, F16 or BF16", label, type));
    }
  }

  /**
   * The DJL data type a weight of {@code dtype} is computed in: its own, except bf16, which DJL
   * 0.35.1 cannot hold (see {@link #toBFloat16}) and which widens to float32 exactly.
   */
  public static DataType computeTypeOf(DType dtype) {
    return dtype == DType.BF16 ? DataType.FLOAT32 : dataTypeOf(dtype);
  }

  /** The DJL data type of a floating-point DType that can be fused into. */
  public static DataType dataTypeOf(DType dtype) {
    switch (dtype) {
      case F64:
        return DataType.FLOAT64;
      case F32:
        return DataType.FLOAT32;
      case F16:
        return DataType.FLOAT16;
      case BF16:
        return DataType.BFLOAT16;
      default:
        throw new IllegalArgumentException("cannot fuse into " + dtype.safetensorsName());
    }
  }

  private static ByteBuffer roundNarrow(NDManager manager, NDArray sum, DType dtype) {
    NDArray single = sum.toType(DataType.FLOAT32, false);
    float[] singleValues = single.toFloatArray();
    ByteBuffer narrow =
        dtype == DType.F16
            ? single.toType(DataType.FLOAT16, false).toByteBuffer().order(ByteOrder.nativeOrder())
            : toBFloat16(singleValues);
    long[] suspects = suspects(singleValues, dtype);
    if (suspects.length == 0) {
      return narrow;
    }
    double[] exact = sum.flatten().take(manager.create(suspects)).toDoubleArray();
    for (int i = 0; i < suspects.length; i++) {
      short bits = dtype == DType.F16 ? FloatFormats.toFloat16(exact[i]) : FloatFormats.toBFloat16(exact[i]);
      narrow.putShort(Math.toIntExact(suspects[i] * 2), bits);
    }
    return narrow;
  }

  /**
   * Float32 bits rounded to bf16, to nearest even, in Java: DJL 0.35.1's PyTorch engine aborts the
   * JVM on any bf16 tensor, so bf16 weights are read and written as bytes and computed in float32.
   */
  private static ByteBuffer toBFloat16(float[] values) {
    ByteBuffer narrow = ByteBuffer.allocate(values.length * 2).order(ByteOrder.LITTLE_ENDIAN);
    FloatFormats.narrow(false, values, narrow);
    return narrow;
  }

  /** Indices whose float32 value may round differently from its float64 source. */
  private static long[] suspects(float[] singleValues, DType dtype) {
    int count = singleValues.length;
    long[] found = new long[16];
    int size = 0;
    boolean half = dtype == DType.F16;
    for (int i = 0; i < count; i++) {
      if (FloatFormats.mayRoundTwice(half, singleValues[i])) {
        if (size == found.length) {
          found = Arrays.copyOf(found, size * 2);
        }
        found[size++] = i;
      }
    }
    return Arrays.copyOf(found, size);
  }


  private static void checkFinite(ByteBuffer bytes, DType dtype, NDArray sum, String label) {
    long index = firstNonFinite(bytes, dtype);
    if (index >= 0) {
      throw notRepresentable(label, sum.flatten().getDouble(index), index, dtype);
    }
  }

  /** The error for a fused {@code value} at {@code index} that {@code dtype} cannot hold. */
  static LoraMergeException notRepresentable(String label, double value, long index, DType dtype) {
    return new LoraMergeException(
        String.format(
            Locale.ROOT,
            "%s: fused value %s at element %d %s",
            label,
            value,
            index,
            Double.isFinite(value)
                ? "is beyond the range of " + dtype.safetensorsName() + "; lower the weights or the scale"
                : "is not a number; the base weight or the update holds NaN or infinity"));
  }
}

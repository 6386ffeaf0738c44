package dev.loramerge.internal.numeric;

import dev.loramerge.DType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.DoubleBuffer;
import java.nio.ShortBuffer;

/**
 * Bit-level conversions between {@code double} and the narrow floating-point formats, each with
 * a single round-to-nearest-even step.
 *
 * <p>Java 17 has no {@code Float.floatToFloat16}; converting through {@code float} first would
 * round twice, which is exactly the error this library promises not to make.
 */
public final class FloatFormats {
  /** The float bits fp16 drops, and their pattern at a tie. */
  private static final int FLOAT16_DROPPED_MASK = 0x1FFF;
  private static final int FLOAT16_TIE_BITS = 0x1000;
  /** The float bits bf16 drops, and their pattern at a tie. */
  private static final int BFLOAT16_DROPPED_MASK = 0xFFFF;
  private static final int BFLOAT16_TIE_BITS = 0x8000;
  /** Float bits of fp16's smallest normal, 2⁻¹⁴. */
  private static final int MIN_NORMAL_FLOAT16_BITS = 0x38800000;
  /** Float bits of 65520, the least magnitude that rounds to fp16 infinity. */
  private static final int FLOAT16_OVERFLOW_BITS = 0x477ff000;
  /** Float bits of ½. */
  private static final int HALF_BITS = 0x3f000000;
  /** The difference of the exponent biases, 127 − 15, in float exponent position. */
  private static final int FLOAT16_REBIAS = 112 << 23;
  /** Every fp16 bit pattern's value: a table read is several times faster than decoding. */
  private static final float[] FLOAT16_VALUES = new float[1 << 16];
  /** Elements per bulk copy between a buffer and a short[]: 8 KiB, a multiple of every vector length. */
  private static final int CHUNK = 4096;

  static {
    for (int bits = 0; bits < FLOAT16_VALUES.length; bits++) {
      // Infinities and NaN keep sign and mantissa, as hardware conversions (and the vector path) do.
      FLOAT16_VALUES[bits] = (bits & 0x7c00) == 0x7c00
          ? Float.intBitsToFloat((bits & 0x8000) << 16 | 0x7f800000 | (bits & 0x3ff) << 13)
          : (float) fromFloat16(bits);
    }
  }

  /**
   * Whether the bulk conversions can run on the Vector API: the module {@code jdk.incubator.vector}
   * is in the boot layer ({@code --add-modules jdk.incubator.vector}) and vectors are wide enough.
   */
  public static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorHalves.pays();

  /** How the bulk conversions run; every kernel gives the scalar conversions' bits. */
  enum Kernel {
    /** Table reads and integer rounding, element by element. */
    SCALAR,
    /** {@link VectorHalves}: the Vector API's bit manipulation (JDK 17 and later, with the module). */
    VECTOR_API,
    /**
     * {@link HardwareHalves} for fp16 (JDK 21 and later), {@link VectorHalves} for bf16 where the
     * module is there, else scalar.
     */
    HARDWARE
  }

  /** The fastest kernel this JVM has. */
  static final Kernel KERNEL = HardwareHalves.AVAILABLE ? Kernel.HARDWARE : VECTOR_API ? Kernel.VECTOR_API : Kernel.SCALAR;

  /** A one-word name of the bulk conversions' kernel, for diagnostics. */
  public static String kernel() {
    return KERNEL.name().toLowerCase(java.util.Locale.ROOT).replace('_', ' ');
  }

  private FloatFormats() {}

  /**
   * Each thread's chunks for the bulk conversions: allocating them per call cost as much as
   * converting a chunk of 4096 elements on the JDK's conversions.
   */
  private static final class Scratch {
    private static final ThreadLocal<Scratch> OF_THREAD = ThreadLocal.withInitial(Scratch::new);

    final short[] halves = new short[CHUNK];
    final short[] second = new short[CHUNK];
    final short[] result = new short[CHUNK];
    final float[] sum = new float[CHUNK];
    final float[] values = new float[CHUNK];

    static Scratch get() {
      return OF_THREAD.get();
    }
  }

  /** The fp16 value with bits {@code bits} (low 16 bits used). */
  public static double fromFloat16(int bits) {
    int sign = (bits >>> 15) & 1;
    int exponent = (bits >>> 10) & 0x1f;
    int mantissa = bits & 0x3ff;
    double magnitude;
    if (exponent == 0) {
      magnitude = Math.scalb((double) mantissa, -24);
    } else if (exponent == 0x1f) {
      magnitude = mantissa == 0 ? Double.POSITIVE_INFINITY : Double.NaN;
    } else {
      magnitude = Math.scalb((double) (mantissa | 0x400), exponent - 25);
    }
    return sign == 0 ? magnitude : -magnitude;
  }

  /** The fp16 value with bits {@code bits} (low 16 bits used), as a float (exact). */
  public static float float16Value(int bits) {
    return FLOAT16_VALUES[bits & 0xffff];
  }

  /**
   * {@code value} rounded once, to nearest even, to fp16 bits; overflow gives infinity. Results
   * in fp16's normal range take a few integer operations on the float's bits, the rest the
   * general path.
   */
  public static short toFloat16(float value) {
    int bits = Float.floatToRawIntBits(value);
    int magnitude = bits & 0x7fffffff;
    if (magnitude >= MIN_NORMAL_FLOAT16_BITS && magnitude < FLOAT16_OVERFLOW_BITS) {
      // Rebias the exponent, then add half an fp16 ulp less one, plus the kept lowest bit for
      // ties to even; a carry out of the mantissa lands in the exponent, as it should.
      int rounded = (magnitude - FLOAT16_REBIAS + 0xfff + ((magnitude >>> 13) & 1)) >>> 13;
      return (short) (((bits >>> 16) & 0x8000) | rounded);
    }
    if (magnitude < MIN_NORMAL_FLOAT16_BITS) {
      // In [½, 1) float's ulp is fp16's subnormal step 2⁻²⁴: adding ½ rounds once, to nearest
      // even, and leaves the subnormal's bits (or the smallest normal's, 0x400) in the mantissa.
      int subnormal = Float.floatToRawIntBits(Float.intBitsToFloat(magnitude) + 0.5f) - HALF_BITS;
      return (short) (((bits >>> 16) & 0x8000) | subnormal);
    }
    return toFloat16((double) value);
  }

  /** {@code value} rounded once, to nearest even, to bf16 bits; overflow gives infinity. */
  public static short toBFloat16(float value) {
    int bits = Float.floatToRawIntBits(value);
    if ((bits & 0x7f800000) == 0x7f800000) {
      return toBFloat16((double) value);
    }
    // bf16 is float32's upper half: the same rounding on the bits, subnormals and overflow included.
    return (short) ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16);
  }

  /** {@code values} rounded to float32, each to nearest (ties to even). */
  public static float[] rounded(double[] values) {
    float[] rounded = new float[values.length];
    for (int i = 0; i < values.length; i++) {
      rounded[i] = (float) values[i];
    }
    return rounded;
  }

  /** {@code values} in float64, exactly. */
  public static double[] widened(float[] values) {
    double[] widened = new double[values.length];
    for (int i = 0; i < values.length; i++) {
      widened[i] = values[i];
    }
    return widened;
  }

  /**
   * Widens the {@code count} fp16 values (bf16 when not {@code float16}) of {@code in} from
   * element {@code first} into {@code out[0, count)}, exactly.
   */
  public static void widen(boolean float16, ByteBuffer in, int first, float[] out, int count) {
    widen(float16, in, first, out, count, KERNEL);
  }

  /** Widens {@code out.length} values from index 0 of {@code in} with {@code kernel} (for tests of every path). */
  static void widen(boolean float16, ByteBuffer in, float[] out, Kernel kernel) {
    widen(float16, in, 0, out, out.length, kernel);
  }

  private static void widen(boolean float16, ByteBuffer in, int first, float[] out, int count, Kernel kernel) {
    // Bulk copies into a primitive array: indexed reads of a read-only buffer cost ~4 ns each.
    ShortBuffer halves = in.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asShortBuffer();
    short[] chunk = Scratch.get().halves;
    for (int start = 0; start < count; start += CHUNK) {
      int length = Math.min(CHUNK, count - start);
      halves.get(first + start, chunk, 0, length);
      if (float16 && kernel == Kernel.HARDWARE) {
        HardwareHalves.INSTANCE.widen(chunk, length, out, start);
        if (NonFinite.any(in, first + start, length, true)) {
          // The CPU quiets signalling NaNs; the library keeps every NaN's bits.
          for (int i = 0; i < length; i++) {
            out[start + i] = float16Value(chunk[i]);
          }
        }
      } else {
        widen(float16, chunk, length, out, start, kernel);
      }
    }
  }

  /**
   * Widens {@code chunk[0, length)} into {@code out} from {@code start} with {@code kernel}, but
   * never {@link HardwareHalves}, whose callers check for NaN in the buffer.
   */
  private static void widen(boolean float16, short[] chunk, int length, float[] out, int start, Kernel kernel) {
    int done = vectorApi(kernel)
        ? float16 ? VectorHalves.widenFloat16(chunk, length, out, start) : VectorHalves.widenBFloat16(chunk, length, out, start)
        : 0;
    for (int i = done; i < length; i++) {
      out[start + i] = float16 ? float16Value(chunk[i]) : Float.intBitsToFloat(chunk[i] << 16);
    }
  }

  /** Whether {@code kernel} runs {@link VectorHalves}' kernels (the hardware kernel does for bf16 where it can). */
  private static boolean vectorApi(Kernel kernel) {
    return kernel == Kernel.VECTOR_API || kernel == Kernel.HARDWARE && VECTOR_API;
  }

  /**
   * Rounds {@code in}'s values once to fp16 (bf16 when not {@code float16}) into {@code out},
   * little-endian from index 0.
   */
  public static void narrow(boolean float16, float[] in, ByteBuffer out) {
    narrow(float16, in, in.length, out, 0, KERNEL);
  }

  /**
   * Rounds {@code in[0, count)} once to fp16 (bf16 when not {@code float16}) into {@code out},
   * little-endian from element {@code first}.
   */
  public static void narrow(boolean float16, float[] in, int count, ByteBuffer out, int first) {
    narrow(float16, in, count, out, first, KERNEL);
  }

  /** {@link #narrow(boolean, float[], ByteBuffer)} with {@code kernel}. */
  static void narrow(boolean float16, float[] in, ByteBuffer out, Kernel kernel) {
    narrow(float16, in, in.length, out, 0, kernel);
  }

  private static void narrow(boolean float16, float[] in, int count, ByteBuffer out, int first, Kernel kernel) {
    ShortBuffer halves = out.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asShortBuffer();
    short[] chunk = Scratch.get().halves;
    for (int start = 0; start < count; start += CHUNK) {
      int length = Math.min(CHUNK, count - start);
      if (float16 && kernel == Kernel.HARDWARE) {
        HardwareHalves.INSTANCE.narrow(in, start, chunk, length);
        halves.put(first + start, chunk, 0, length);
        int from = start;
        canonicalNaNs(out, first + start, chunk, length, i -> toFloat16(in[from + i]));
      } else {
        narrow(float16, in, start, chunk, length, kernel);
        halves.put(first + start, chunk, 0, length);
      }
    }
  }

  /**
   * Rounds {@code in[start, start + length)} into {@code chunk[0, length)} with {@code kernel},
   * but never {@link HardwareHalves}, whose callers check for NaN in the buffer.
   */
  private static void narrow(boolean float16, float[] in, int start, short[] chunk, int length, Kernel kernel) {
    int done = vectorApi(kernel)
        ? float16 ? VectorHalves.narrowFloat16(in, start, chunk, length) : VectorHalves.narrowBFloat16(in, start, chunk, length)
        : 0;
    for (int i = done; i < length; i++) {
      chunk[i] = float16 ? toFloat16(in[start + i]) : toBFloat16(in[start + i]);
    }
  }

  /** The fp16 bits of element {@code i} of a chunk, computed on the scalar path. */
  private interface ScalarHalf {
    short of(int i);
  }

  /**
   * Replaces the NaNs among the fp16 {@code chunk[0, length)} that {@link HardwareHalves} made,
   * and {@code out} holds from element {@code first}, with {@code scalar}'s bits: the CPU keeps
   * part of a NaN's payload, the library gives the quiet NaN 0x7e00 with the sign.
   */
  private static void canonicalNaNs(ByteBuffer out, int first, short[] chunk, int length, ScalarHalf scalar) {
    if (NonFinite.any(out, first, length, true)) {
      ByteBuffer ordered = out.duplicate().order(ByteOrder.LITTLE_ENDIAN);
      for (int i = 0; i < length; i++) {
        if ((chunk[i] & 0x7fff) > 0x7c00) {
          ordered.putShort(2 * (first + i), scalar.of(i));
        }
      }
    }
  }

  /**
   * The weighted sum of fp16 tensors (bf16 when not {@code float16}) {@code inputs}, elements
   * {@code [0, count)}, rounded once into {@code out} (little-endian, from element 0): each
   * element times its coefficient rounded to float32, the products summed in order in float32,
   * as {@link #widen} of every input then {@code sum = x₀·c₀; sum += xₖ·cₖ} then {@link #narrow}
   * would, without their float32 arrays: one pass over the inputs and the output.
   */
  public static void weightedSum(boolean float16, ByteBuffer[] inputs, float[] coefficients, ByteBuffer out, int count) {
    weightedSum(float16, inputs, coefficients, out, count, KERNEL);
  }

  /** {@link #weightedSum(boolean, ByteBuffer[], float[], ByteBuffer, int)} with {@code kernel}. */
  static void weightedSum(boolean float16, ByteBuffer[] inputs, float[] coefficients, ByteBuffer out, int count, Kernel kernel) {
    int n = inputs.length;
    ShortBuffer[] sources = new ShortBuffer[n];
    for (int k = 0; k < n; k++) {
      sources[k] = inputs[k].duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asShortBuffer();
    }
    ShortBuffer target = out.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asShortBuffer();
    int size = CHUNK;
    Scratch scratch = Scratch.get();
    short[] halves = scratch.halves;
    short[] second = scratch.second;
    short[] result = scratch.result;
    float[] sum = scratch.sum;
    float[] values = scratch.values;
    boolean hardware = float16 && kernel == Kernel.HARDWARE;
    for (int start = 0; start < count; start += size) {
      int length = Math.min(size, count - start);
      sources[0].get(start, halves, 0, length);
      if (hardware && n == 1) {
        HardwareHalves.INSTANCE.scale(halves, coefficients[0], result, length);
      } else if (hardware && n == 2) {
        sources[1].get(start, second, 0, length);
        HardwareHalves.INSTANCE.sum(halves, coefficients[0], second, coefficients[1], result, length);
      } else if (hardware) {
        HardwareHalves.INSTANCE.scaleInto(halves, coefficients[0], sum, length);
        for (int k = 1; k < n - 1; k++) {
          sources[k].get(start, halves, 0, length);
          HardwareHalves.INSTANCE.addScaled(halves, coefficients[k], sum, length);
        }
        sources[n - 1].get(start, halves, 0, length);
        HardwareHalves.INSTANCE.finish(sum, halves, coefficients[n - 1], result, length);
      } else if (float16 && n == 2 && kernel == Kernel.VECTOR_API) {
        sources[1].get(start, second, 0, length);
        int done = VectorHalves.sumFloat16(halves, coefficients[0], second, coefficients[1], result, length);
        for (int i = done; i < length; i++) {
          float value = float16Value(halves[i]) * coefficients[0];
          value += float16Value(second[i]) * coefficients[1];
          result[i] = toFloat16(value);
        }
      } else {
        widen(float16, halves, length, sum, 0, kernel);
        scale(sum, length, coefficients[0]);
        for (int k = 1; k < n; k++) {
          sources[k].get(start, halves, 0, length);
          widen(float16, halves, length, values, 0, kernel);
          addScaled(sum, values, length, coefficients[k]);
        }
        narrow(float16, sum, 0, result, length, kernel);
      }
      target.put(start, result, 0, length);
      if (hardware) {
        int from = start;
        canonicalNaNs(out, start, result, length, i -> toFloat16(scalarWeightedSum(sources, coefficients, from + i)));
      }
    }
  }

  /**
   * {@code out[outFirst, outFirst + count)} = the fp16 elements (bf16 when not {@code float16})
   * of {@code in} (little-endian from index 0) from element {@code first}, times {@code
   * coefficient}, rounded to float32 then once to the format: {@link #weightedSum} of one input,
   * into an array.
   */
  public static void scale(boolean float16, ByteBuffer in, int first, float coefficient, short[] out, int outFirst, int count) {
    scale(float16, in, first, coefficient, out, outFirst, count, KERNEL);
  }

  /** {@link #scale(boolean, ByteBuffer, int, float, short[], int, int)} with {@code kernel}. */
  static void scale(boolean float16, ByteBuffer in, int first, float coefficient, short[] out, int outFirst, int count, Kernel kernel) {
    ShortBuffer source = in.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asShortBuffer();
    Scratch scratch = Scratch.get();
    short[] halves = scratch.halves;
    for (int start = 0; start < count; start += CHUNK) {
      int length = Math.min(CHUNK, count - start);
      source.get(first + start, halves, 0, length);
      int at = outFirst + start;
      if (float16 && kernel == Kernel.HARDWARE) {
        HardwareHalves.INSTANCE.scale(halves, coefficient, scratch.result, length);
        System.arraycopy(scratch.result, 0, out, at, length);
        // A NaN comes from a NaN or an infinity among the inputs (or a coefficient that is not
        // finite), whose bits the CPU treats its own way.
        if (!Float.isFinite(coefficient) || NonFinite.any(in, first + start, length, true)) {
          for (int i = 0; i < length; i++) {
            out[at + i] = toFloat16(float16Value(halves[i]) * coefficient);
          }
        }
      } else if (float16 && kernel == Kernel.VECTOR_API) {
        int done = VectorHalves.scaleFloat16(halves, coefficient, out, at, length);
        for (int i = done; i < length; i++) {
          out[at + i] = toFloat16(float16Value(halves[i]) * coefficient);
        }
      } else {
        float[] values = scratch.values;
        widen(float16, halves, length, values, 0, kernel);
        scale(values, length, coefficient);
        narrow(float16, values, 0, scratch.result, length, kernel);
        System.arraycopy(scratch.result, 0, out, at, length);
      }
    }
  }

  /** Element {@code index} of a weighted sum of fp16 tensors, on the scalar path. */
  private static float scalarWeightedSum(ShortBuffer[] sources, float[] coefficients, int index) {
    float value = float16Value(sources[0].get(index)) * coefficients[0];
    for (int k = 1; k < sources.length; k++) {
      value += float16Value(sources[k].get(index)) * coefficients[k];
    }
    return value;
  }

  // The loops are methods of their own so that C2 vectorizes them.
  private static void scale(float[] values, int length, float coefficient) {
    for (int i = 0; i < length; i++) {
      values[i] *= coefficient;
    }
  }

  private static void addScaled(float[] sum, float[] values, int length, float coefficient) {
    for (int i = 0; i < length; i++) {
      sum[i] += values[i] * coefficient;
    }
  }

  /**
   * Writes {@code values[0, count)} as {@code dtype} (F64, F32, F16 or BF16), each rounded once,
   * into {@code out} (little-endian, not read-only) from element {@code first}: what {@link
   * dev.loramerge.TensorData#ofFloats(float[], DType, long...)} stores, for a tensor filled a
   * block at a time.
   */
  public static void encode(DType dtype, float[] values, int count, ByteBuffer out, int first) {
    switch (dtype) {
      case F64 -> {
        DoubleBuffer doubles = out.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asDoubleBuffer();
        for (int i = 0; i < count; i++) {
          doubles.put(first + i, values[i]);
        }
      }
      case F32 -> out.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asFloatBuffer().put(first, values, 0, count);
      case F16, BF16 -> narrow(dtype == DType.F16, values, count, out, first);
      default -> throw new IllegalArgumentException("cannot encode " + dtype + " from real values");
    }
  }

  /**
   * Rounds {@code in}'s float64 values once to fp16 (bf16 when not {@code float16}) into {@code
   * out}, little-endian from index 0: through float32 in bulk, then again from float64 where the
   * float32 value {@linkplain #mayRoundTwice may have rounded twice}.
   */
  public static void narrow(boolean float16, double[] in, ByteBuffer out) {
    narrow(float16, in, out, KERNEL);
  }

  /** {@link #narrow(boolean, double[], ByteBuffer)} with {@code kernel}. */
  static void narrow(boolean float16, double[] in, ByteBuffer out, Kernel kernel) {
    float[] single = new float[in.length];
    for (int i = 0; i < in.length; i++) {
      single[i] = (float) in[i];
    }
    narrow(float16, single, out, kernel);
    ByteBuffer ordered = out.duplicate().order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < in.length; i++) {
      if (mayRoundTwice(float16, single[i])) {
        ordered.putShort(2 * i, float16 ? toFloat16(in[i]) : toBFloat16(in[i]));
      }
    }
  }

  /**
   * Whether rounding {@code single}, itself a float64 rounded to float32, on to fp16 (bf16 when
   * not {@code float16}) may differ from rounding the float64 once. Float32 keeps 13 more bits
   * than fp16 (16 more than bf16), so its rounding can land on a tie of the narrow format but
   * never cross one: only ties, and fp16's subnormal range where fewer bits are kept, may differ.
   */
  public static boolean mayRoundTwice(boolean float16, float single) {
    int magnitude = Float.floatToRawIntBits(single) & 0x7FFFFFFF;
    return float16
        ? (magnitude & FLOAT16_DROPPED_MASK) == FLOAT16_TIE_BITS || (magnitude != 0 && magnitude < MIN_NORMAL_FLOAT16_BITS)
        : (magnitude & BFLOAT16_DROPPED_MASK) == BFLOAT16_TIE_BITS;
  }

  /** The bf16 value with bits {@code bits} (low 16 bits used). */
  public static float fromBFloat16(int bits) {
    return Float.intBitsToFloat((bits & 0xffff) << 16);
  }

  /** The float8 e4m3fn value (no infinities; 0x7f and 0xff are NaN) with bits {@code bits}. */
  public static double fromFloat8E4M3(int bits) {
    int sign = (bits >>> 7) & 1;
    int exponent = (bits >>> 3) & 0xf;
    int mantissa = bits & 0x7;
    double magnitude;
    if (exponent == 0xf && mantissa == 0x7) {
      magnitude = Double.NaN;
    } else if (exponent == 0) {
      magnitude = Math.scalb((double) mantissa, -9);
    } else {
      magnitude = Math.scalb((double) (mantissa | 0x8), exponent - 10);
    }
    return sign == 0 ? magnitude : -magnitude;
  }

  /** The float8 e5m2 value (the upper byte of an fp16) with bits {@code bits}. */
  public static double fromFloat8E5M2(int bits) {
    return fromFloat16((bits & 0xff) << 8);
  }

  /** {@code value} rounded once, to nearest even, to fp16 bits; overflow gives infinity. */
  public static short toFloat16(double value) {
    return (short) roundToBinary(value, 5, 10);
  }

  /** {@code value} rounded once, to nearest even, to bf16 bits; overflow gives infinity. */
  public static short toBFloat16(double value) {
    return (short) roundToBinary(value, 8, 7);
  }

  /**
   * {@code value} rounded once, to nearest even, to float8 e4m3fn bits. The format has no
   * infinity: a value that rounds beyond ±448 gives NaN (0x7f or 0xff), as PyTorch's conversion
   * does, and callers that must not saturate check for it.
   */
  public static byte toFloat8E4M3(double value) {
    int sign = Double.doubleToRawLongBits(value) < 0 ? 0x80 : 0;
    double magnitude = Math.abs(value);
    // NaN and infinities have exponent 1024 and end up with the values past 448 below.
    int exponent = Math.getExponent(magnitude);
    if (exponent < -6) {
      return (byte) (sign | (int) Math.rint(Math.scalb(magnitude, 9)));
    }
    long mantissa = (long) Math.rint(Math.scalb(magnitude, 3 - exponent));
    if (mantissa == 16) {
      exponent++;
      mantissa = 8;
    }
    // 480 (mantissa 15 at exponent 8) would be the code of NaN; 464, halfway, rounds to 448.
    if (exponent > 8 || (exponent == 8 && mantissa == 15)) {
      return (byte) (sign | 0x7f);
    }
    return (byte) (sign | ((exponent + 7) << 3) | (int) (mantissa - 8));
  }

  /** {@code value} rounded once, to nearest even, to float8 e5m2 bits; overflow gives infinity. */
  public static byte toFloat8E5M2(double value) {
    return (byte) roundToBinary(value, 5, 2);
  }

  /** The largest finite value of float8 e4m3fn. */
  public static final double FLOAT8_E4M3_MAX = 448.0;

  /** The largest finite value of float8 e5m2. */
  public static final double FLOAT8_E5M2_MAX = 57344.0;

  /** The largest finite value of fp16. */
  public static final double FLOAT16_MAX = 65504.0;

  /** The largest finite value of bf16. */
  public static final double BFLOAT16_MAX = Math.scalb(255.0, 120);

  /**
   * Rounds {@code value} to the IEEE-style binary format with {@code exponentBits} and
   * {@code mantissaBits}, returning its bit pattern.
   */
  private static int roundToBinary(double value, int exponentBits, int mantissaBits) {
    int bias = (1 << (exponentBits - 1)) - 1;
    int minExponent = 1 - bias;
    int exponentField = (1 << exponentBits) - 1;
    int sign = (Double.doubleToRawLongBits(value) < 0 ? 1 : 0) << (exponentBits + mantissaBits);
    if (Double.isNaN(value)) {
      return sign | (exponentField << mantissaBits) | (1 << (mantissaBits - 1));
    }
    int infinity = sign | (exponentField << mantissaBits);
    double magnitude = Math.abs(value);
    if (Double.isInfinite(magnitude)) {
      return infinity;
    }
    int exponent = Math.getExponent(magnitude);
    if (exponent < minExponent) {
      // Subnormal (or zero): the scaled value is exact in double, rint rounds half to even, and a
      // carry into 1 << mantissaBits is exactly the smallest normal's encoding.
      long mantissa = (long) Math.rint(Math.scalb(magnitude, mantissaBits - minExponent));
      return sign | (int) mantissa;
    }
    long mantissa = (long) Math.rint(Math.scalb(magnitude, mantissaBits - exponent));
    if (mantissa == 1L << (mantissaBits + 1)) {
      exponent++;
      mantissa >>= 1;
    }
    if (exponent > bias) {
      return infinity;
    }
    return sign | ((exponent + bias) << mantissaBits) | (int) (mantissa - (1L << mantissaBits));
  }
}

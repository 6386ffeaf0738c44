package dev.loramerge.internal.fuse;

import dev.loramerge.DType;
import dev.loramerge.internal.numeric.FloatFormats;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.function.UnaryOperator;

/**
 * Fusing a materialised update: the weight decoded to float64, the fused weight computed there by
 * the caller (W + ΔW for any adapter kind, or DoRA's renormalised W + ΔW, which reads W), each
 * value rounded once to the weight's type, to nearest even. Every value is checked before
 * anything is written. Also the path of the float8 types, which libtorch through DJL cannot hold.
 */
public final class DenseFusion {
  private DenseFusion() {}

  /**
   * Writes {@code fused} applied to {@code weight}'s values (little-endian {@code weightType}),
   * rounded once to {@code dtype}, into {@code into} from its position. {@code into} may be
   * {@code weight}: the weight is decoded before anything is written.
   *
   * @throws dev.loramerge.LoraMergeException naming {@code label} when a fused value is NaN,
   *     infinite or rounds beyond {@code dtype}'s largest finite value (float8 e4m3fn, which has
   *     no infinity, is never saturated)
   */
  public static void fuse(
      ByteBuffer weight, DType weightType, UnaryOperator<double[]> fused, ByteBuffer into, DType dtype, String label) {
    double[] values = decode(weight, weightType);
    double[] result = fused.apply(values);
    if (result.length != values.length) {
      throw new IllegalArgumentException(label + ": an update of " + result.length + " values for a weight of " + values.length);
    }
    into.duplicate().order(ByteOrder.LITTLE_ENDIAN).put(encode(result, dtype, label));
  }

  /** The values of little-endian {@code bytes} of a floating-point {@code dtype}, exactly. */
  public static double[] decode(ByteBuffer bytes, DType dtype) {
    ByteBuffer in = bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN);
    double[] values = new double[in.remaining() / dtype.byteSize()];
    switch (dtype) {
      case F64 -> in.asDoubleBuffer().get(values);
      case F32 -> {
        float[] floats = new float[values.length];
        in.asFloatBuffer().get(floats);
        for (int i = 0; i < values.length; i++) {
          values[i] = floats[i];
        }
      }
      case F16, BF16 -> {
        short[] halves = new short[values.length];
        in.asShortBuffer().get(halves);
        for (int i = 0; i < values.length; i++) {
          values[i] = dtype == DType.F16 ? FloatFormats.fromFloat16(halves[i] & 0xffff) : FloatFormats.fromBFloat16(halves[i]);
        }
      }
      case F8_E4M3, F8_E5M2 -> {
        for (int i = 0; i < values.length; i++) {
          int bits = in.get(in.position() + i) & 0xff;
          values[i] = dtype == DType.F8_E4M3 ? FloatFormats.fromFloat8E4M3(bits) : FloatFormats.fromFloat8E5M2(bits);
        }
      }
      default -> throw new IllegalArgumentException("cannot fuse into " + dtype.safetensorsName());
    }
    return values;
  }

  /**
   * {@code values} rounded once to {@code dtype}, little-endian, after checking every value.
   *
   * @throws dev.loramerge.LoraMergeException naming {@code label} for the first value that is
   *     not finite or rounds beyond the type's range
   */
  public static ByteBuffer encode(double[] values, DType dtype, String label) {
    ByteBuffer out = ByteBuffer.allocate(Math.multiplyExact(values.length, dtype.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < values.length; i++) {
      double value = values[i];
      boolean representable;
      switch (dtype) {
        case F64 -> {
          representable = Double.isFinite(value);
          out.putDouble(value);
        }
        case F32 -> {
          float single = (float) value;
          representable = Float.isFinite(single);
          out.putFloat(single);
        }
        case F16 -> {
          short bits = FloatFormats.toFloat16(value);
          representable = (bits & 0x7C00) != 0x7C00;
          out.putShort(bits);
        }
        case BF16 -> {
          short bits = FloatFormats.toBFloat16(value);
          representable = (bits & 0x7F80) != 0x7F80;
          out.putShort(bits);
        }
        case F8_E4M3 -> {
          byte bits = FloatFormats.toFloat8E4M3(value);
          representable = (bits & 0x7F) != 0x7F;
          out.put(bits);
        }
        case F8_E5M2 -> {
          byte bits = FloatFormats.toFloat8E5M2(value);
          representable = (bits & 0x7C) != 0x7C;
          out.put(bits);
        }
        default -> throw new IllegalArgumentException("cannot fuse into " + dtype.safetensorsName());
      }
      if (!representable) {
        throw Fusion.notRepresentable(label, value, i, dtype);
      }
    }
    return out.flip();
  }

  /** Whether {@code dtype} is one of the float8 types, which only this class fuses into. */
  public static boolean isFloat8(DType dtype) {
    return dtype == DType.F8_E4M3 || dtype == DType.F8_E5M2;
  }
}

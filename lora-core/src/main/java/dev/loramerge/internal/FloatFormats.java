package dev.loramerge.internal;

/**
 * Bit-level conversions between {@code double} and the narrow floating-point formats, each with
 * a single round-to-nearest-even step.
 *
 * <p>Java 17 has no {@code Float.floatToFloat16}; converting through {@code float} first would
 * round twice, which is exactly the error this library promises not to make.
 */
public final class FloatFormats {
  private FloatFormats() {}

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

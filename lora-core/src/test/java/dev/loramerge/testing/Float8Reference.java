package dev.loramerge.testing;

import java.util.OptionalInt;

/**
 * The float8 formats as their specification defines them, written apart from the library's
 * bit-level code, so that tests can check its encoders and decoders against it.
 *
 * <p>Source: OCP "8-bit Floating Point Specification (OFP8)" rev. 1.0 (2023), table 1, which
 * PyTorch follows ({@code torch.float8_e4m3fn}, {@code torch.float8_e5m2},
 * c10/util/Float8_e4m3fn.h and Float8_e5m2.h): E4M3 has bias 7, no infinities, S.1111.111 as its
 * only NaN and 448 as its largest value; E5M2 has bias 15, IEEE-style infinities and NaNs in
 * exponent 31, and 57344 as its largest value.
 */
public final class Float8Reference {
  private Float8Reference() {}

  /** The value of {@code code} (low 8 bits) in E4M3 when {@code e4m3}, else in E5M2. */
  public static double decode(boolean e4m3, int code) {
    int mantissaBits = e4m3 ? 3 : 2;
    int bias = e4m3 ? 7 : 15;
    int exponentField = (code & 0x7f) >> mantissaBits;
    int mantissa = code & ((1 << mantissaBits) - 1);
    double sign = (code & 0x80) != 0 ? -1 : 1;
    double steps = 1 << mantissaBits;
    if (e4m3 && exponentField == 15 && mantissa == 7) {
      return Double.NaN;
    }
    if (!e4m3 && exponentField == 31) {
      return mantissa == 0 ? sign * Double.POSITIVE_INFINITY : Double.NaN;
    }
    if (exponentField == 0) {
      return sign * Math.pow(2, 1 - bias) * (mantissa / steps);
    }
    return sign * Math.pow(2, exponentField - bias) * (1 + mantissa / steps);
  }

  /** The largest finite value: 448 for E4M3, 57344 for E5M2. */
  public static double max(boolean e4m3) {
    return decode(e4m3, largestFiniteCode(e4m3));
  }

  /**
   * The code nearest to finite {@code value}, ties to the code with an even mantissa, with {@code
   * value}'s sign (a negative value that rounds to zero gives −0); empty when {@code value} rounds
   * past the largest finite value, i.e. when an unbounded exponent would round it to the next
   * step above it.
   */
  public static OptionalInt nearest(boolean e4m3, double value) {
    int sign = Double.doubleToRawLongBits(value) < 0 ? 0x80 : 0;
    double magnitude = Math.abs(value);
    int top = largestFiniteCode(e4m3);
    // Positive codes are in value order; the step past the top is one more ulp of the top binade.
    for (int code = 0; code <= top; code++) {
      double low = decode(e4m3, code);
      double high = code < top ? decode(e4m3, code + 1) : 2 * low - decode(e4m3, code - 1);
      if (magnitude >= high) {
        continue;
      }
      // Both neighbours have at most 4 significant bits: their midpoint is exact in double.
      double middle = (low + high) / 2;
      int chosen = magnitude < middle ? code : magnitude > middle ? code + 1 : (code & 1) == 0 ? code : code + 1;
      return chosen > top ? OptionalInt.empty() : OptionalInt.of(sign | chosen);
    }
    return OptionalInt.empty();
  }

  private static int largestFiniteCode(boolean e4m3) {
    return e4m3 ? 0x7e : 0x7b;
  }
}

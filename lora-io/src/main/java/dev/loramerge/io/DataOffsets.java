package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkArgument;

/**
 * Where one tensor's bytes lie in a safetensors file: the range {@code [begin, end)} counted from
 * the start of the data section (the first byte after the header). Kept apart from the tensor's
 * {@link dev.loramerge.TensorSpec}, which says what the tensor is wherever it lives; only the
 * reader needs to know where.
 *
 * @param begin first byte, relative to the data section
 * @param end one past the last byte, relative to the data section
 */
record DataOffsets(long begin, long end) {
  /** Checks that {@code 0 <= begin <= end}. */
  DataOffsets {
    checkArgument(
        0 <= begin && begin <= end, "data_offsets [%s, %s) are not 0 <= begin <= end", begin, end);
  }

  /** Number of bytes, {@code end - begin}. */
  long byteSize() {
    return end - begin;
  }
}

package dev.loramerge.io;

import static java.nio.charset.StandardCharsets.UTF_8;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Assembles safetensors bytes by hand (length prefix, header, data), so that the reader is tested
 * against bytes our writer did not produce.
 */
final class RawSafetensors {
  private RawSafetensors() {}

  /** The 8-byte length of {@code header}, then {@code header} as UTF-8, then {@code data}. */
  static byte[] file(String header, byte[] data) {
    return file(header.getBytes(UTF_8), data);
  }

  /** The 8-byte length of {@code header}, then {@code header}, then {@code data}. */
  static byte[] file(byte[] header, byte[] data) {
    return withLength(header.length, header, data);
  }

  /** {@code length} as 8 little-endian bytes, then {@code header}, then {@code data}. */
  static byte[] withLength(long length, byte[] header, byte[] data) {
    return ByteBuffer.allocate(8 + header.length + data.length)
        .order(ByteOrder.LITTLE_ENDIAN)
        .putLong(length)
        .put(header)
        .put(data)
        .array();
  }

  /** {@code count} little-endian float32 values 0, 1, 2, .... */
  static byte[] floats(int count) {
    ByteBuffer buffer = ByteBuffer.allocate(4 * count).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < count; i++) {
      buffer.putFloat(i);
    }
    return buffer.array();
  }
}

package dev.loramerge.io;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.LoraMergeException;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Files over 2 GiB, which a single Java buffer cannot address: a sparse file whose header declares
 * a 2.2 GB tensor, so nothing but the last few bytes is ever written to disk.
 */
class SafetensorsLargeFileTest {
  private static final long BIG = 2_200_000_000L;

  @TempDir Path folder;

  @Test
  void readsTensorsBeyondTwoGibibytes() throws IOException {
    String header =
        String.format(
            Locale.ROOT,
            "{\"big\":{\"dtype\":\"U8\",\"shape\":[%d],\"data_offsets\":[0,%d]},"
                + "\"small\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[%d,%d]}}",
            BIG,
            BIG,
            BIG,
            BIG + 16);
    byte[] headerBytes = header.getBytes(UTF_8);
    long dataOffset = 8 + headerBytes.length;
    Path path = folder.resolve("huge.safetensors");
    try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
      file.write(
          ByteBuffer.allocate(8)
              .order(ByteOrder.LITTLE_ENDIAN)
              .putLong(headerBytes.length)
              .array());
      file.write(headerBytes);
      file.setLength(dataOffset + BIG + 16);
      file.seek(dataOffset + BIG);
      ByteBuffer small = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN);
      small.putFloat(1.5f).putFloat(-2f).putFloat(1e-3f).putFloat(Float.MAX_VALUE);
      file.write(small.array());
    }

    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThat(file.size()).isEqualTo(dataOffset + BIG + 16);
      assertThat(file.tensor("small").toFloatArray())
          .containsExactly(1.5f, -2f, 1e-3f, Float.MAX_VALUE);
      assertThatThrownBy(() -> file.tensor("big"))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage(
              "huge.safetensors: tensor 'big' holds 2200000000 bytes,"
                  + " more than the 2147483647 a Java buffer can map");
    }
  }
}

package dev.loramerge.io;

import static dev.loramerge.io.RawSafetensors.file;
import static dev.loramerge.io.RawSafetensors.floats;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What an open {@link SafetensorsFile} offers, on a hand-assembled file. */
class SafetensorsFileTest {
  private static final String HEADER =
      "{\"__metadata__\":{\"ss_network_dim\":\"4\",\"format\":\"pt\"},"
          + "\"up\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[8,16]},"
          + "\"down\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}";

  @TempDir Path folder;
  private Path path;

  @BeforeEach
  void writeFile() throws IOException {
    path = Files.write(folder.resolve("style.safetensors"), file(HEADER, floats(4)));
  }

  @Test
  void headerAccessors() throws IOException {
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThat(file.path()).isEqualTo(path);
      assertThat(file.metadata())
          .containsExactly(
              org.assertj.core.api.Assertions.entry("ss_network_dim", "4"),
              org.assertj.core.api.Assertions.entry("format", "pt"));
      assertThat(file.tensors())
          .containsExactly(
              new TensorSpec("down", DType.F32, new long[] {1, 2}),
              new TensorSpec("up", DType.F32, new long[] {2, 1}));
      assertThat(file.offsets())
          .as("each tensor's bytes, in data-offset order")
          .containsExactly(
              org.assertj.core.api.Assertions.entry("down", new DataOffsets(0, 8)),
              org.assertj.core.api.Assertions.entry("up", new DataOffsets(8, 16)));
      assertThat(file.spec("up")).contains(file.tensors().get(1));
      assertThat(file.spec("mid")).isEmpty();
      assertThat(file.contains("down")).isTrue();
      assertThat(file.contains("mid")).isFalse();
      assertThat(file.dataOffset()).isEqualTo(8 + HEADER.length());
      assertThat(file.size()).isEqualTo(8 + HEADER.length() + 16);
    }
  }

  @Test
  void tensorIsAReadOnlyLittleEndianViewOfItsBytes() throws IOException {
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      TensorData up = file.tensor("up");
      assertThat(up.dtype()).isEqualTo(DType.F32);
      assertThat(up.shape()).containsExactly(2, 1);
      assertThat(up.toFloatArray()).containsExactly(2f, 3f);
      ByteBuffer bytes = up.bytes();
      assertThat(bytes.isReadOnly()).isTrue();
      assertThat(bytes.order()).isEqualTo(ByteOrder.LITTLE_ENDIAN);
      assertThat(bytes.remaining()).isEqualTo(8);
    }
  }

  @Test
  void tensorsStayReadableAfterClose() throws IOException {
    TensorData down;
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      down = file.tensor("down");
    }
    assertThat(down.toFloatArray()).containsExactly(0f, 1f);
  }

  @Test
  void unknownTensor() throws IOException {
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThatThrownBy(() -> file.tensor("mid"))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("style.safetensors: no tensor 'mid'");
    }
  }

  @Test
  void closeIsIdempotentAndEndsReading() throws IOException {
    SafetensorsFile file = SafetensorsFile.open(path);
    file.close();
    file.close();
    assertThatThrownBy(() -> file.tensor("up"))
        .isInstanceOf(IllegalStateException.class)
        .hasMessage("style.safetensors: file is closed");
  }
}

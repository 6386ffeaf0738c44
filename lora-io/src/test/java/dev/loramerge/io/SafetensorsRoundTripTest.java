package dev.loramerge.io;

import static dev.loramerge.io.RawSafetensors.floats;
import static java.nio.charset.StandardCharsets.UTF_8;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.entry;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Writing and reading back, against each other and against the reference writer's bytes. */
class SafetensorsRoundTripTest {
  @TempDir Path folder;

  /** {@code shape}-shaped tensor of {@code dtype} with seeded random bytes (any bits will do). */
  private static TensorData random(DType dtype, long seed, long... shape) {
    byte[] bytes = new byte[Math.toIntExact(TensorData.numel(shape) * dtype.byteSize())];
    SplittableRandom random = new SplittableRandom(seed);
    for (int i = 0; i < bytes.length; i++) {
      bytes[i] = (byte) random.nextInt(256);
    }
    return TensorData.of(dtype, shape, ByteBuffer.wrap(bytes));
  }

  private static Map<String, TensorData> readAll(SafetensorsFile file) {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (TensorSpec info : file.tensors()) {
      tensors.put(info.name(), file.tensor(info.name()));
    }
    return tensors;
  }

  /** The bytes of the reference's {@code test_serialization} ({@code tensor.rs}). */
  @Test
  void matchesTheReferenceWriter() throws IOException {
    Path path = folder.resolve("attn.safetensors");
    TensorData attn = TensorData.ofFloats(new float[] {0, 1, 2, 3, 4, 5}, 1, 2, 3);
    Safetensors.write(path, Map.of("attn.0", attn), Map.of());
    String header = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    assertThat(header).hasSize(64);
    assertThat(Files.readAllBytes(path)).isEqualTo(RawSafetensors.file(header, floats(6)));
  }

  /** Bytes of the reference's {@code test_empty}, with and without metadata. */
  @Test
  void emptyFilesMatchTheReferenceWriter() throws IOException {
    Path bare = folder.resolve("bare.safetensors");
    Safetensors.write(bare, Map.of(), Map.of());
    assertThat(Files.readAllBytes(bare))
        .isEqualTo(new byte[] {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '});

    Path withMetadata = folder.resolve("metadata.safetensors");
    Safetensors.write(withMetadata, Map.of(), Map.of("framework", "pt"));
    byte[] bytes = Files.readAllBytes(withMetadata);
    assertThat(bytes).startsWith(40, 0, 0, 0, 0, 0, 0, 0);
    assertThat(new String(bytes, 8, bytes.length - 8, UTF_8))
        .isEqualTo("{\"__metadata__\":{\"framework\":\"pt\"}}     ");
  }

  /** serde_json escapes control characters in lower-case hex and writes the rest as UTF-8. */
  @Test
  void stringsAreEscapedAsSerdeJsonEscapesThem() throws IOException {
    Path path = folder.resolve("escapes.safetensors");
    Safetensors.write(
        path, Map.of(), Map.of("k", "\u0001\u001f\b\t\n\f\r\"\\/\u007f\u00e9\uD83D\uDE00"));
    byte[] bytes = Files.readAllBytes(path);
    assertThat(new String(bytes, 8, bytes.length - 8, UTF_8).stripTrailing())
        .isEqualTo(
            "{\"__metadata__\":{\"k\":\"\\u0001\\u001f\\b\\t\\n"
                + "\\f\\r"
                + "\\\"\\\\/\u007f\u00e9\uD83D\uDE00\"}}");
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThat(file.metadata().get("k"))
          .isEqualTo("\u0001\u001f\b\t\n\f\r\"\\/\u007f\u00e9\uD83D\uDE00");
    }
  }

  @ParameterizedTest
  @EnumSource(DType.class)
  void everyDtypeRoundTrips(DType dtype) throws IOException {
    Map<String, TensorData> tensors =
        Map.of(
            "matrix", random(dtype, 1, 3, 5),
            "scalar", random(dtype, 2),
            "empty", random(dtype, 3, 0, 4));
    Path path = folder.resolve("tensors.safetensors");
    Safetensors.write(path, tensors, Map.of("dtype", dtype.safetensorsName()));
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThat(readAll(file)).isEqualTo(tensors);
      assertThat(file.metadata()).isEqualTo(Map.of("dtype", dtype.safetensorsName()));
      assertThat(file.dataOffset() % 8).isZero();
    }
  }

  @Test
  void writeReadWriteIsByteIdentical() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put(
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", random(DType.F16, 1, 4, 320));
    tensors.put(
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", random(DType.BF16, 2, 320, 4));
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.alpha", random(DType.F32, 3));
    tensors.put("step", random(DType.I64, 4));
    // Several keys, deliberately not sorted: the header's order is kept.
    Map<String, String> metadata = ImmutableMap.of("ss_network_dim", "4", "format", "pt", "a", "1");
    Path first = folder.resolve("first.safetensors");
    Safetensors.write(first, tensors, metadata);

    Path second = folder.resolve("second.safetensors");
    try (SafetensorsFile file = SafetensorsFile.open(first)) {
      assertThat(file.metadata()).containsExactlyEntriesOf(metadata);
      Safetensors.write(second, readAll(file), file.metadata());
    }
    assertThat(Files.readAllBytes(second)).isEqualTo(Files.readAllBytes(first));
  }

  /** tensor.rs {@code prepare}: descending dtype (the reference enum's order), then name. */
  @Test
  void layoutFollowsTheReferenceOrder() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (DType dtype : DType.values()) {
      tensors.put(dtype.safetensorsName().toLowerCase(java.util.Locale.ROOT), random(dtype, 0, 2));
    }
    // By code point U+FFFF sorts before U+1F600; by UTF-16 unit (String.compareTo), after.
    tensors.put("\uD83D\uDE00", random(DType.F32, 0, 1));
    tensors.put("\uFFFF", random(DType.F32, 0, 1));
    Path path = folder.resolve("order.safetensors");
    Safetensors.write(path, tensors, Map.of());
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThat(file.tensors())
          .extracting(TensorSpec::name)
          .containsExactly(
              "i64",
              "f64",
              "f32",
              "\uFFFF",
              "\uD83D\uDE00",
              "i32",
              "bf16",
              "f16",
              "i16",
              "f8_e4m3",
              "f8_e5m2",
              "i8",
              "u8",
              "bool");
    }
  }

  @Test
  void writerKeepsTheGivenOrder() throws IOException {
    TensorData small = random(DType.U8, 1, 3);
    TensorData large = random(DType.F64, 2, 2);
    Path path = folder.resolve("given.safetensors");
    try (SafetensorsWriter writer =
        SafetensorsWriter.create(
            path,
            Arrays.asList(
                TensorSpec.of("z", small), TensorSpec.of("a", large)),
            Map.of())) {
      writer.write("z", small);
      writer.write("a", large.bytes());
      writer.commit();
    }
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      assertThat(file.tensors())
          .containsExactly(
              new TensorSpec("z", DType.U8, new long[] {3}),
              new TensorSpec("a", DType.F64, new long[] {2}));
      assertThat(file.offsets())
          .as("the bytes in the given order")
          .containsExactly(entry("z", new DataOffsets(0, 3)), entry("a", new DataOffsets(3, 19)));
      assertThat(file.tensor("a")).isEqualTo(large);
    }
  }
}

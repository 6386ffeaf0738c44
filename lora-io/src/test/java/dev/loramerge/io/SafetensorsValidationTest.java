package dev.loramerge.io;

import static dev.loramerge.io.RawSafetensors.file;
import static dev.loramerge.io.RawSafetensors.floats;
import static dev.loramerge.io.RawSafetensors.withLength;
import static java.nio.charset.StandardCharsets.UTF_8;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.entry;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.DType;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * One test per rule of the reference reader ({@code tensor.rs}: {@code read_metadata}, {@code
 * Metadata::validate}) and per header shape it rejects, each on hand-assembled bytes, asserting the
 * whole message.
 */
class SafetensorsValidationTest {
  private static final String A_F32 = "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";

  @TempDir Path folder;

  private void assertRejected(byte[] bytes, String message) throws IOException {
    Path path = Files.write(folder.resolve("style.safetensors"), bytes);
    assertThatThrownBy(() -> SafetensorsFile.open(path))
        .isInstanceOf(SafetensorsFormatException.class)
        .hasMessage("style.safetensors: " + message);
  }

  private void assertRejected(String header, byte[] data, String message) throws IOException {
    assertRejected(file(header, data), message);
  }

  private SafetensorsFile open(byte[] bytes) throws IOException {
    return SafetensorsFile.open(Files.write(folder.resolve("style.safetensors"), bytes));
  }

  @Nested
  class Framing {
    @Test
    void fileShorterThanTheLength() throws IOException {
      assertRejected(new byte[5], "file holds 5 bytes, fewer than the 8 of the header length");
    }

    @Test
    void headerOverOneHundredMegabytes() throws IOException {
      assertRejected(
          withLength(100_000_001, new byte[0], new byte[0]),
          "header length 100000001 exceeds the maximum of 100000000 bytes");
    }

    @Test
    void headerLengthIsUnsigned() throws IOException {
      assertRejected(
          withLength(-1, new byte[0], new byte[0]),
          "header length 18446744073709551615 exceeds the maximum of 100000000 bytes");
    }

    @Test
    void headerBeyondTheEndOfTheFile() throws IOException {
      assertRejected(
          withLength(100, "{}".getBytes(UTF_8), new byte[8]),
          "header length 100 needs 108 bytes but the file holds 18");
    }

    @Test
    void headerNotUtf8() throws IOException {
      byte[] header = {'{', '"', (byte) 0xff, '"', ':', '{', '}', '}'};
      assertRejected(
          file(header, new byte[0]),
          "header is not valid UTF-8: malformed sequence at byte 2 of the header");
    }
  }

  @Nested
  class Json {
    @Test
    void truncatedJson() throws IOException {
      assertRejected(
          "{\"a\":",
          new byte[0],
          "header is not valid JSON at line 1, column 6: "
              + "Unexpected end-of-input within/between Object entries");
    }

    @Test
    void jacksonSourceDescriptionsAreLeftOut() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2",
          new byte[0],
          "header is not valid JSON at line 1, column 33: Unexpected end-of-input: "
              + "expected close marker for Array (start marker at line 1, column 29)");
    }

    @Test
    void byteOrderMarkIsNotWhitespace() throws IOException {
      assertRejected(
          "\uFEFF{}      ",
          new byte[0],
          "header is not valid JSON at line 1, column 1: Unexpected character ('\uFEFF' (code"
              + " 65279 / 0xfeff)): expected a valid value (JSON String, Number, Array, Object or"
              + " token 'null', 'true' or 'false')");
    }

    @Test
    void emptyHeader() throws IOException {
      assertRejected("        ", new byte[0], "header holds no JSON value, expected an object");
    }

    @Test
    void headerNotAnObject() throws IOException {
      assertRejected("[]", new byte[0], "header is an array, expected a JSON object");
    }

    @Test
    void contentAfterTheObject() throws IOException {
      assertRejected(
          "{} {}", new byte[0], "header continues after its JSON object at line 1, column 4");
    }

    @Test
    void unpairedSurrogateEscape() throws IOException {
      assertRejected(
          "{\"\\ud800\":" + A_F32 + "}",
          new byte[4],
          "header string at line 1, column 2 holds an unpaired surrogate escape");
    }

    @Test
    void tensorNamedTwice() throws IOException {
      assertRejected(
          "{\"a\":" + A_F32 + ",\"a\":" + A_F32 + "}",
          new byte[4],
          "header holds tensor 'a' twice");
    }
  }

  @Nested
  class Metadata {
    @Test
    void notAnObject() throws IOException {
      assertRejected(
          "{\"__metadata__\":\"pt\"}",
          new byte[0],
          "'__metadata__' is a string, expected an object of strings");
    }

    @Test
    void valueNotAString() throws IOException {
      assertRejected(
          "{\"__metadata__\":{\"ss_network_dim\":8}}",
          new byte[0],
          "'__metadata__' value for key 'ss_network_dim' is a number, expected a string");
    }

    @Test
    void keyTwice() throws IOException {
      assertRejected(
          "{\"__metadata__\":{\"format\":\"pt\",\"format\":\"tf\"}}",
          new byte[0],
          "'__metadata__' holds key 'format' twice");
    }

    @Test
    void metadataTwice() throws IOException {
      assertRejected(
          "{\"__metadata__\":{},\"__metadata__\":{}}",
          new byte[0],
          "header holds '__metadata__' twice");
    }

    @Test
    void nullMeansNone() throws IOException {
      try (SafetensorsFile file = open(file("{\"__metadata__\":null}", new byte[0]))) {
        assertThat(file.metadata()).isEmpty();
      }
    }
  }

  @Nested
  class Entries {
    @Test
    void entryNotAnObject() throws IOException {
      assertRejected(
          "{\"a\":[0,4]}",
          new byte[0],
          "tensor 'a' is an array, expected an object with dtype, shape and data_offsets");
    }

    @Test
    void unknownField() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"offsets\":[0,4]}}",
          new byte[4],
          "tensor 'a' has unknown field 'offsets', expected only dtype, shape and data_offsets");
    }

    @Test
    void fieldTwice() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          new byte[4],
          "tensor 'a' holds field 'dtype' twice");
    }

    @ParameterizedTest
    @CsvSource(
        delimiter = '|',
        value = {
          "\"shape\":[1],\"data_offsets\":[0,4]     | dtype",
          "\"dtype\":\"F32\",\"data_offsets\":[0,4] | shape",
          "\"dtype\":\"F32\",\"shape\":[1]          | data_offsets",
        })
    void missingField(String fields, String missing) throws IOException {
      assertRejected(
          "{\"a\":{" + fields + "}}", new byte[4], "tensor 'a' lacks field '" + missing + "'");
    }

    @ParameterizedTest
    @CsvSource(
        delimiter = '|',
        value = {
          "\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]        "
              + "| field 'dtype' is a number, expected a string",
          "\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4] "
              + "| field 'shape' is a string, expected an array of non-negative integers",
          "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}      "
              + "| field 'data_offsets' is an object, expected an array [begin, end]",
        })
    void fieldOfTheWrongType(String fields, String message) throws IOException {
      assertRejected("{\"a\":{" + fields + "}}", new byte[4], "tensor 'a' " + message);
    }

    @Test
    void unknownDtype() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
          new byte[4],
          "tensor 'a' has dtype 'U16', expected one of "
              + "F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL");
    }

    @ParameterizedTest
    @CsvSource(
        delimiter = '|',
        value = {
          "-1                  | -1",
          "-0                  | -0",
          "1.0                 | 1.0",
          "1e2                 | 1e2",
          "9223372036854775808 | 9223372036854775808",
          "\"1\"               | a string",
          "null                | null",
          "[1]                 | an array",
        })
    void dimensionNotANonNegativeInteger(String json, String shown) throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[" + json + "],\"data_offsets\":[0,4]}}",
          new byte[4],
          "tensor 'a' field 'shape' holds "
              + shown
              + ", expected integers from 0 to 9223372036854775807");
    }

    @Test
    void offsetNotANonNegativeInteger() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}",
          new byte[4],
          "tensor 'a' field 'data_offsets' holds -4, expected integers from 0 to"
              + " 9223372036854775807");
    }

    @Test
    void offsetsNotAPair() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
          new byte[4],
          "tensor 'a' field 'data_offsets' holds 3 values, expected 2 ([begin, end])");
    }
  }

  @Nested
  class Layout {
    @Test
    void firstTensorAfterTheStart() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          new byte[8],
          "tensor 'a' data_offsets [4, 8) begin at 4 but the first tensor must begin at 0");
    }

    @Test
    void gapBetweenTensors() throws IOException {
      assertRejected(
          "{\"a\":" + A_F32 + ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
          new byte[12],
          "tensor 'b' data_offsets [8, 12) begin at 8 but the previous tensor 'a' ends at 4");
    }

    @Test
    void overlappingTensors() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          new byte[8],
          "tensor 'b' data_offsets [4, 8) begin at 4 but the previous tensor 'a' ends at 8");
    }

    @Test
    void endBeforeBegin() throws IOException {
      assertRejected(
          "{\"a\":" + A_F32 + ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,2]}}",
          new byte[4],
          "tensor 'b' data_offsets [4, 2) end before they begin");
    }

    @Test
    void sizeOverflows() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}",
          new byte[0],
          "tensor 'a' size of F32 [4611686018427387904, 4] overflows 64 bits");
    }

    @Test
    void offsetsDisagreeWithDtypeAndShape() throws IOException {
      assertRejected(
          "{\"x.lora_down.weight\":"
              + "{\"dtype\":\"F16\",\"shape\":[4,320],\"data_offsets\":[0,1000]}}",
          new byte[1000],
          "tensor 'x.lora_down.weight' data_offsets [0, 1000) hold 1000 bytes"
              + " but F16 [4, 320] needs 2560 bytes");
    }

    @Test
    void bytesAfterTheLastTensor() throws IOException {
      assertRejected(
          "{\"a\":" + A_F32 + "}",
          new byte[8],
          "tensors cover 4 bytes but the file holds 8 bytes after the header");
    }

    @Test
    void missingBytesOfTheLastTensor() throws IOException {
      assertRejected(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
          new byte[4],
          "tensors cover 8 bytes but the file holds 4 bytes after the header");
    }
  }

  @Nested
  class Accepted {
    @Test
    void entriesInAnyOrderAreSortedByOffset() throws IOException {
      String header =
          "  {\"b\":{\"data_offsets\":[4,12],\"shape\":[2],\"dtype\":\"F32\"},"
              + "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} \t\r\n  ";
      try (SafetensorsFile file = open(file(header, floats(3)))) {
        assertThat(file.tensors())
            .containsExactly(
                new TensorSpec("a", DType.F32, new long[] {1}),
                new TensorSpec("b", DType.F32, new long[] {2}));
        assertThat(file.offsets())
            .as("entries sorted by offset")
            .containsExactly(entry("a", new DataOffsets(0, 4)), entry("b", new DataOffsets(4, 12)));
        assertThat(file.tensor("b").toFloatArray()).containsExactly(1f, 2f);
        assertThat(file.dataOffset()).isEqualTo(8 + header.length());
      }
    }

    @Test
    void emptyTensorsAndScalars() throws IOException {
      String header =
          "{\"empty\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
              + "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}";
      try (SafetensorsFile file = open(file(header, floats(1)))) {
        assertThat(file.tensors()).extracting(TensorSpec::name).containsExactly("empty", "scalar");
        assertThat(file.tensor("empty").byteSize()).isZero();
        assertThat(file.tensor("scalar").rank()).isZero();
      }
    }

    @Test
    void noTensors() throws IOException {
      try (SafetensorsFile file = open(file("{}", new byte[0]))) {
        assertThat(file.tensors()).isEmpty();
        assertThat(file.size()).isEqualTo(10);
      }
    }
  }
}

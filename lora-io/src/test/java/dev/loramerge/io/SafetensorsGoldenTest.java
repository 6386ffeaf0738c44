package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.testing.GoldenFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every file of the PEFT 0.21 reference outputs ({@code testdata/peft-0.21}: the Python {@code
 * safetensors} package's files with some tensors left out, the header encoded as that package
 * encodes it) opens, and writing its tensors and metadata back gives the same bytes.
 */
class SafetensorsGoldenTest {
  @TempDir Path folder;

  static Stream<String> goldenFiles() throws IOException {
    Path golden = GoldenFiles.peft021();
    try (Stream<Path> files = Files.walk(golden)) {
      return files
          .filter(path -> path.getFileName().toString().endsWith(".safetensors"))
          .map(path -> golden.relativize(path).toString())
          .sorted()
          .toList()
          .stream();
    }
  }

  @ParameterizedTest
  @MethodSource("goldenFiles")
  void readWriteReadIsExact(String relative) throws IOException {
    Path original = GoldenFiles.peft021(relative);
    Path copy = folder.resolve("copy.safetensors");
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    Map<String, String> metadata;
    try (SafetensorsFile file = SafetensorsFile.open(original)) {
      assertThat(file.tensors()).isNotEmpty();
      for (TensorSpec info : file.tensors()) {
        tensors.put(info.name(), file.tensor(info.name()));
      }
      metadata = file.metadata();
      Safetensors.write(copy, tensors, metadata);
    }
    try (SafetensorsFile file = SafetensorsFile.open(copy)) {
      assertThat(file.metadata()).containsExactlyEntriesOf(metadata);
      for (Map.Entry<String, TensorData> entry : tensors.entrySet()) {
        assertThat(file.tensor(entry.getKey())).isEqualTo(entry.getValue());
      }
    }
    assertThat(Files.readAllBytes(copy)).isEqualTo(Files.readAllBytes(original));
  }
}

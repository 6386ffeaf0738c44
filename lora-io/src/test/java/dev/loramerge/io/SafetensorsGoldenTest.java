package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.loramerge.TensorData;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every file of the PEFT 0.21 reference outputs ({@code shared/golden/peft-0.21}, written by the
 * Python {@code safetensors} package) opens, and writing its tensors and metadata back gives the
 * same bytes.
 */
class SafetensorsGoldenTest {
  @TempDir Path folder;

  /** {@code shared/golden/peft-0.21} in the nearest folder above the working directory. */
  private static Optional<Path> goldenFolder() {
    for (Path dir = Path.of(System.getProperty("user.dir")).toAbsolutePath();
        dir != null;
        dir = dir.getParent()) {
      Path golden = dir.resolve("shared/golden/peft-0.21");
      if (Files.isDirectory(golden)) {
        return Optional.of(golden);
      }
    }
    return Optional.empty();
  }

  static Stream<String> goldenFiles() throws IOException {
    Optional<Path> golden = goldenFolder();
    if (golden.isEmpty()) {
      // One placeholder case, skipped below, so that a missing folder reads as skipped.
      return Stream.of("(shared/golden/peft-0.21 not found)");
    }
    try (Stream<Path> files = Files.walk(golden.get())) {
      return files
          .filter(path -> path.getFileName().toString().endsWith(".safetensors"))
          .map(path -> golden.get().relativize(path).toString())
          .sorted()
          .toList()
          .stream();
    }
  }

  @ParameterizedTest
  @MethodSource("goldenFiles")
  void readWriteReadIsExact(String relative) throws IOException {
    Optional<Path> golden = goldenFolder();
    assumeTrue(golden.isPresent(), "shared/golden/peft-0.21 not found above user.dir");
    Path original = golden.get().resolve(relative);
    Path copy = folder.resolve("copy.safetensors");
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    Map<String, String> metadata;
    try (SafetensorsFile file = SafetensorsFile.open(original)) {
      assertThat(file.tensors()).isNotEmpty();
      for (TensorInfo info : file.tensors()) {
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

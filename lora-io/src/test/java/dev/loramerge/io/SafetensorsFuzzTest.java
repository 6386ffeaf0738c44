package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.io.TempDir;

/**
 * Arbitrary bytes either open as a safetensors file whose tensors can all be mapped and written
 * back, or fail with a {@link SafetensorsFormatException}; no other exception may escape.
 *
 * <p>Without {@code JAZZER_FUZZ=1} this replays the seeds under {@code
 * SafetensorsFuzzTestInputs/header} only; with it, Jazzer fuzzes for ten seconds and stores any
 * failing input there.
 */
class SafetensorsFuzzTest {
  @TempDir static Path folder;

  @FuzzTest(maxDuration = "10s")
  // Jazzer learns most tokens from the comparisons it hooks; these help it reach the rarer rules.
  @DictionaryEntries({
    "\"dtype\":\"F32\"",
    "\"shape\":[",
    "\"data_offsets\":[",
    "\"__metadata__\":{",
    "\\ud800",
    "-0",
    "18446744073709551616"
  })
  void header(byte[] input) throws IOException {
    Path path = Files.write(folder.resolve("fuzz.safetensors"), input);
    SafetensorsFile file;
    try {
      file = SafetensorsFile.open(path);
    } catch (SafetensorsFormatException expected) {
      return;
    }
    Path copy = folder.resolve("copy.safetensors");
    try (file;
        SafetensorsWriter writer =
            SafetensorsWriter.create(copy, file.tensors(), file.metadata())) {
      for (TensorSpec spec : file.tensors()) {
        TensorData tensor = file.tensor(spec.name());
        assertThat(tensor.byteSize()).isEqualTo(spec.byteSize());
        writer.write(spec.name(), tensor);
      }
      writer.commit();
      try (SafetensorsFile reread = SafetensorsFile.open(copy)) {
        assertThat(reread.metadata()).containsExactlyEntriesOf(file.metadata());
        List<TensorSpec> tensors = reread.tensors();
        assertThat(tensors).isEqualTo(file.tensors());
        assertThat(reread.offsets()).as("the copy's byte ranges").isEqualTo(file.offsets());
      }
    }
  }
}

package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

class CacheTrainingCommandTest {
  @Test
  void mergesAndFusesQuietlyAndLeavesNothingBehind() throws IOException {
    Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
    long before = trainingFolders(tmp);
    StringWriter out = new StringWriter();
    StringWriter err = new StringWriter();
    int code = LoraCommand.execute(new String[] {"cache-training"}, new PrintWriter(out, true), new PrintWriter(err, true));
    assertThat(code).as("stderr: %s", err).isZero();
    assertThat(out.toString()).as("the launcher discards it, but it prints nothing anyway").isEmpty();
    assertThat(trainingFolders(tmp)).as("its temporary folder is deleted").isEqualTo(before);
  }

  @Test
  void isNotListedInTheHelp() {
    StringWriter out = new StringWriter();
    int code = LoraCommand.execute(new String[] {"--help"}, new PrintWriter(out, true), new PrintWriter(new StringWriter(), true));
    assertThat(code).isZero();
    assertThat(out.toString()).contains("merge").doesNotContain("cache-training");
  }

  private static long trainingFolders(Path tmp) throws IOException {
    try (Stream<Path> children = Files.list(tmp)) {
      return children.filter(path -> path.getFileName().toString().startsWith("lora-cache-training-")).count();
    }
  }
}

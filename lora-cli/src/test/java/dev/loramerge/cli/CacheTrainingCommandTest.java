package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

class CacheTrainingCommandTest {
  @Test
  void mergesAndFusesQuietlyAndLeavesNothingBehind() throws IOException {
    Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
    long before = trainingFolders(tmp);
    CommandRun command = new CommandRun();
    int code = command.run("cache-training");
    assertThat(code).as("stderr: %s", command.err()).isZero();
    assertThat(command.out()).as("the launcher discards it, but it prints nothing anyway").isEmpty();
    assertThat(trainingFolders(tmp)).as("its temporary folder is deleted").isEqualTo(before);
  }

  @Test
  void isNotListedInTheHelp() {
    CommandRun command = new CommandRun();
    int code = command.run("--help");
    assertThat(code).isZero();
    assertThat(command.out()).contains("merge").doesNotContain("cache-training");
  }

  private static long trainingFolders(Path tmp) throws IOException {
    try (Stream<Path> children = Files.list(tmp)) {
      return children.filter(path -> path.getFileName().toString().startsWith("lora-cache-training-")).count();
    }
  }
}

package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.OptionalLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The temporary files' names, and the deletion of those a process that has ended left behind. */
class TemporaryFilesTest {
  private static final long PID = ProcessHandle.current().pid();

  @TempDir Path folder;

  private Path target() {
    return folder.resolve("out.safetensors");
  }

  private List<Path> contents() throws IOException {
    try (Stream<Path> files = Files.list(folder)) {
      return files.toList();
    }
  }

  /** The pid of a process that has ended. */
  private static long endedPid() throws IOException, InterruptedException {
    Process process = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-version").redirectErrorStream(true).start();
    process.getInputStream().transferTo(java.io.OutputStream.nullOutputStream());
    process.waitFor();
    return process.pid();
  }

  @Test
  void aTemporaryFileNamesItsOutputAndItsProcess() throws IOException {
    Path temporary = TemporaryFiles.createFile(target());
    assertThat(temporary.getFileName().toString())
        .as("a leftover says which output and which process")
        .matches("\\.out\\.safetensors\\." + PID + "\\.[0-9a-f]{16}\\.lora-tmp");
    assertThat(temporary.getParent()).isEqualTo(folder);
    assertThat(TemporaryFiles.writerOf(temporary, target())).as("the pid read back").hasValue(PID);
    TemporaryFiles.discard(temporary);
    assertThat(contents()).as("discarded").isEmpty();
  }

  @Test
  void onlyTheNamesOfThisOutputAreItsTemporaries() {
    assertThat(TemporaryFiles.writerOf(folder.resolve(".out.safetensors.12.ab.lora-tmp"), target())).hasValue(12);
    assertThat(TemporaryFiles.writerOf(folder.resolve(".out.safetensors.x.12.ab.lora-tmp"), target()))
        .as("the temporary of out.safetensors.x")
        .isEmpty();
    assertThat(TemporaryFiles.writerOf(folder.resolve(".out.safetensors.x.12.ab.lora-tmp"), folder.resolve("out.safetensors.x")))
        .hasValue(12);
    assertThat(TemporaryFiles.writerOf(folder.resolve(".out.safetensors12345.tmp"), target()))
        .as("another program's temporary file")
        .isEqualTo(OptionalLong.empty());
    assertThat(TemporaryFiles.writerOf(folder.resolve("out.safetensors"), target())).isEmpty();
  }

  @Test
  void theNextWriteDeletesTheTemporariesOfEndedProcessesAndKeepsTheRest() throws Exception {
    long ended = endedPid();
    Path staleFile = Files.writeString(folder.resolve(".out.safetensors." + ended + ".00ff00ff00ff00ff.lora-tmp"), "half");
    Path staleFolder = Files.createDirectory(folder.resolve(".out.safetensors." + ended + ".0123456789abcdef.lora-tmp"));
    Files.writeString(staleFolder.resolve("adapter_model.safetensors"), "half");
    Path live = Files.writeString(folder.resolve(".out.safetensors." + ProcessHandle.current().parent().orElseThrow().pid() + ".aa.lora-tmp"), "");
    Path otherOutput = Files.writeString(folder.resolve(".other.safetensors." + ended + ".bb.lora-tmp"), "");
    Path notOurs = Files.writeString(folder.resolve(".out.safetensors1234.tmp"), "");

    Path temporary = TemporaryFiles.createFile(target());

    assertThat(contents())
        .as("the ended process's file and folder are gone; a live process's, another output's and"
            + " another program's stay")
        .containsExactlyInAnyOrder(temporary, live, otherOutput, notOurs)
        .doesNotContain(staleFile, staleFolder);
    TemporaryFiles.discard(temporary);
  }

  @Test
  void publishingMovesTheContentAndForgetsTheTemporary() throws IOException {
    Path temporary = TemporaryFiles.createFolder(target());
    Files.writeString(temporary.resolve("config.json"), "{}");
    Path output = Files.createDirectory(folder.resolve("adapter"));
    TemporaryFiles.publish(
        temporary, output, () -> Files.move(temporary.resolve("config.json"), output.resolve("config.json")));
    assertThat(contents()).as("what is left of the staging folder is deleted").containsExactly(output);
    assertThat(output.resolve("config.json")).hasContent("{}");
  }
}

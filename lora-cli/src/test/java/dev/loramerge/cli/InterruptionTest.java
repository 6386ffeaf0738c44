package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.SafetensorsWriter;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The command as a process: a signal during a write leaves no temporary file, and a temporary file
 * of a process killed outright is deleted by the next write to the same output.
 */
class InterruptionTest {
  private static final int LAYERS = 6;
  private static final int OUT = 2048;
  private static final int IN = 4096;

  @TempDir Path temp;
  /** The child processes' stderr, apart from {@code temp}, whose contents the tests check. */
  @TempDir Path logs;

  /** A started {@code lora} process, with stderr in a file. */
  private record Lora(Process process, Path stderr) {
    List<String> errorLines() throws IOException {
      return Files.readAllLines(stderr);
    }
  }

  private Lora start(String... args) throws IOException {
    return start(List.of(), args);
  }

  private Lora start(List<String> jvmOptions, String... args) throws IOException {
    List<String> command = new ArrayList<>();
    command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    command.addAll(jvmOptions);
    command.addAll(List.of("-Xmx1g", "-Dai.djl.offline=true", "-cp", System.getProperty("java.class.path")));
    command.add(LoraCommand.class.getName());
    command.addAll(List.of(args));
    Path stderr = Files.createTempFile(logs, "lora-stderr", ".txt");
    Process process =
        new ProcessBuilder(command)
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .redirectError(stderr.toFile())
            .start();
    return new Lora(process, stderr);
  }

  private List<Path> contents(Path folder) throws IOException {
    try (Stream<Path> files = Files.list(folder)) {
      return files.toList();
    }
  }

  /**
   * A base of six 2048×4096 fp16 weights (100 MB) and a rank-8 adapter over all of them: a fuse
   * without the Vector API takes seconds, long enough to be stopped while it writes.
   */
  private Path[] baseAndAdapter() throws IOException {
    Path base = temp.resolve("base.safetensors");
    List<TensorSpec> entries = new ArrayList<>();
    for (int i = 0; i < LAYERS; i++) {
      entries.add(new TensorSpec("layers." + i + ".proj.weight", DType.F16, new long[] {OUT, IN}));
    }
    ByteBuffer values = ByteBuffer.allocateDirect(OUT * IN * 2).order(ByteOrder.LITTLE_ENDIAN);
    SplittableRandom random = new SplittableRandom(3);
    for (int i = 0; i < OUT * IN; i++) {
      values.putShort(i * 2, FloatFormats.toFloat16(0.05 * (random.nextDouble() - 0.5)));
    }
    try (SafetensorsWriter writer = SafetensorsWriter.create(base, entries, Map.of())) {
      for (TensorSpec entry : entries) {
        writer.write(entry.name(), values.duplicate());
      }
      writer.commit();
    }
    LoraAdapter.Builder adapter = LoraAdapter.builder().name("style");
    for (int i = 0; i < LAYERS; i++) {
      adapter.add(
          LoraModule.of(ModuleKey.of(Component.UNET, "layers." + i + ".proj"), gaussian(random, 8, IN), gaussian(random, OUT, 8), 8));
    }
    Path style = temp.resolve("style");
    LoraFiles.write(adapter.build(), style, LoraFormat.PEFT);
    return new Path[] {base, style};
  }

  private static TensorData gaussian(SplittableRandom random, int rows, int columns) {
    float[] values = new float[rows * columns];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (0.01 * (random.nextDouble() - 0.5));
    }
    return TensorData.ofFloats(values, rows, columns);
  }

  /** The pid of a process that has ended. */
  private static long endedPid() throws IOException, InterruptedException {
    Process process = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-version")
        .redirectErrorStream(true)
        .redirectOutput(ProcessBuilder.Redirect.DISCARD)
        .start();
    process.waitFor();
    return process.pid();
  }

  @ParameterizedTest(name = "SIG{0}")
  @CsvSource({"TERM, 143", "INT, 130"})
  void aSignalDuringAFuseLeavesNoTemporaryFile(String signal, int exitCode) throws Exception {
    Path[] inputs = baseAndAdapter();
    Path output = temp.resolve("fused.safetensors");
    // Interpreted, the fuse takes many times longer than the signal takes to arrive, so the signal
    // finds it writing however loaded the machine is.
    Lora lora = start(List.of("-Xint"), "fuse", "--base", inputs[0].toString(), "-o", output.toString(), inputs[1] + "=0.8");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (contents(temp).stream().noneMatch(path -> path.getFileName().toString().endsWith(".lora-tmp"))) {
      assertThat(lora.process().isAlive()).as("the fuse is still running; stderr: %s", lora.errorLines()).isTrue();
      assertThat(System.nanoTime()).as("the temporary file appears within a minute").isLessThan(deadline);
      Thread.sleep(10);
    }
    Process kill = new ProcessBuilder("kill", "-" + signal, Long.toString(lora.process().pid())).inheritIO().start();
    assertThat(kill.waitFor()).as("kill -%s", signal).isZero();
    assertThat(lora.process().waitFor(60, TimeUnit.SECONDS)).as("the process ends").isTrue();

    assertThat(lora.process().exitValue()).as("exit code; stderr: %s", lora.errorLines()).isEqualTo(exitCode);
    assertThat(lora.errorLines().stream().filter(line -> line.startsWith("lora:")))
        .as("one line says what was not written")
        .containsExactly("lora: interrupted; " + output + " was not written");
    assertThat(contents(temp)).as("no temporary file and no output").containsExactlyInAnyOrder(inputs);
  }

  @Test
  void theNextWriteDeletesATemporaryFileOfAProcessThatWasKilled() throws Exception {
    Path[] inputs = baseAndAdapter();
    long ended = endedPid();
    String leftover = ".style.safetensors." + ended + ".0123456789abcdef.lora-tmp";
    Files.writeString(temp.resolve(leftover), "half a file");
    Path output = temp.resolve("style.safetensors");

    Lora lora = start("convert", "--to", "kohya", "-o", output.toString(), inputs[1].toString());
    assertThat(lora.process().waitFor(60, TimeUnit.SECONDS)).as("the process ends").isTrue();

    assertThat(lora.process().exitValue()).as("exit code; stderr: %s", lora.errorLines()).isZero();
    assertThat(lora.errorLines())
        .as("says which file it deleted, and why")
        .anyMatch(line -> line.contains(output + ": deleted " + leftover + ", left by process " + ended + ", which has ended"));
    assertThat(contents(temp)).containsExactlyInAnyOrder(inputs[0], inputs[1], output);
  }

  @Test
  void aSignalDuringTheDemoLeavesNoTemporaryFolder() throws Exception {
    Path tmp = Files.createDirectory(temp.resolve("tmp"));
    Lora lora = start(List.of("-Xint", "-Djava.io.tmpdir=" + tmp), "demo");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (contents(tmp).isEmpty()) {
      assertThat(lora.process().isAlive()).as("the demo is still running; stderr: %s", lora.errorLines()).isTrue();
      assertThat(System.nanoTime()).as("the demo's folder appears within a minute").isLessThan(deadline);
      Thread.sleep(10);
    }
    lora.process().destroy();
    assertThat(lora.process().waitFor(60, TimeUnit.SECONDS)).as("the process ends").isTrue();

    assertThat(lora.process().exitValue()).as("exit code; stderr: %s", lora.errorLines()).isEqualTo(143);
    assertThat(lora.errorLines().stream().filter(line -> line.startsWith("lora:"))).containsExactly("lora: interrupted");
    assertThat(contents(tmp)).as("the demo's folder is gone").isEmpty();
  }
}

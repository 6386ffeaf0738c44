package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.GoldenFiles;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code lora fuse} and {@code lora unfuse} on PEFT 0.21's golden base, as a user would run them. */
class FuseCommandTest {
  @TempDir Path temp;

  private final CommandRun command = new CommandRun();

  private static String[] withInputs(List<String> args) throws IOException {
    List<String> all = new ArrayList<>(args);
    all.add(GoldenFiles.peft021("kohya/style.safetensors") + "=0.5");
    all.add(GoldenFiles.peft021("adapters/subject") + "=0.8");
    return all.toArray(String[]::new);
  }

  @Test
  void fuseThenUnfuseWithTheOriginalGivesTheBaseBack() throws IOException {
    Path base = GoldenFiles.peft021("base.fp16.safetensors");
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run(withInputs(List.of("fuse", "--base", base.toString(), "-o", fused.toString(), "--scale", "0.9"))))
        .as("fuse exit code; stderr: %s", command.err())
        .isZero();
    assertThat(command.out()).contains("fused 28 modules into");
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      assertThat(file.metadata().get(LoraMerger.RECIPE_KEY))
          .contains("\"operation\":\"fuse\"")
          .contains("\"sha256\"")
          .contains("base.fp16.safetensors");
    }
    Path restored = temp.resolve("restored.safetensors");
    assertThat(
            command.run(withInputs(List.of("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), "--scale", "0.9"))))
        .as("unfuse exit code; stderr: %s", command.err())
        .isZero();
    assertThat(Files.readAllBytes(restored)).as("restored file").isEqualTo(Files.readAllBytes(base));
  }

  @Test
  void overflowFailsWithOneLineAndNoOutput() throws IOException {
    Path fused = temp.resolve("fused.safetensors");
    int code =
        command.run("fuse", "--base", GoldenFiles.peft021("base.fp16.safetensors").toString(), "-o", fused.toString(),
            GoldenFiles.peft021("adapters/style") + "=100000");
    assertThat(code).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err()).startsWith("lora: base.fp16.safetensors: module 'unet.").contains("beyond the range of F16");
    try (Stream<Path> files = Files.list(temp)) {
      assertThat(files).as("files left behind").isEmpty();
    }
  }

  @Test
  void aTruncatedBaseFailsWithOneLine() throws IOException {
    byte[] bytes = Files.readAllBytes(GoldenFiles.peft021("base.fp16.safetensors"));
    Path truncated = temp.resolve("truncated.safetensors");
    Files.write(truncated, java.util.Arrays.copyOf(bytes, bytes.length / 2));
    int code = command.run("fuse", "--base", truncated.toString(), "-o", temp.resolve("out.safetensors").toString(),
        GoldenFiles.peft021("adapters/style") + "=1");
    assertThat(code).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err()).startsWith("lora: truncated.safetensors: ");
    assertThat(temp.resolve("out.safetensors")).doesNotExist();
  }

  @Test
  void fuseNeedsABase() {
    assertThat(command.run("fuse", "-o", temp.resolve("out.safetensors").toString(), "x=1")).isEqualTo(2);
    assertThat(command.err()).contains("--base");
  }

  /** A small base and a PEFT adapter over it, built in code; {@code missing} drops a weight. */
  private Path[] tinyBaseAndAdapter(boolean missing) throws IOException {
    java.util.Map<String, dev.loramerge.TensorData> weights = new java.util.LinkedHashMap<>(TinyLora.base(dev.loramerge.DType.F16, 3));
    if (missing) {
      weights.remove(TinyLora.KEYS[1].path() + ".weight");
    }
    Path base = temp.resolve("base.safetensors");
    Safetensors.write(base, weights, java.util.Map.of());
    Path adapter = temp.resolve("style");
    LoraFiles.write(TinyLora.adapter("style", 4, 4, 1), adapter, LoraFormat.PEFT);
    return new Path[] {base, adapter};
  }

  @Test
  void anOutputThatIsAnInputIsAUsageError() throws IOException {
    Path[] inputs = tinyBaseAndAdapter(false);
    byte[] before = Files.readAllBytes(inputs[0]);
    assertThat(command.run("fuse", "--base", inputs[0].toString(), "-o", inputs[0].toString(), inputs[1] + "=1"))
        .as("-o the base; stderr: %s", command.err())
        .isEqualTo(2);
    assertThat(command.err())
        .startsWith("lora: Invalid value for option '--output': " + inputs[0] + " is the input " + inputs[0] + "; inputs are never modified");
    assertThat(command.run("fuse", "--base", inputs[0].toString(), "-o", inputs[1].toString(), inputs[1] + "=1"))
        .as("-o the adapter; stderr: %s", command.err())
        .isEqualTo(2);
    assertThat(Files.readAllBytes(inputs[0])).as("the base is unchanged").isEqualTo(before);
  }

  @Test
  void aWrongDTypeIsAUsageError() throws IOException {
    Path[] inputs = tinyBaseAndAdapter(false);
    Path output = temp.resolve("out.safetensors");
    assertThat(command.run("fuse", "--base", inputs[0].toString(), "-o", output.toString(), "--dtype", "fp4", inputs[1] + "=1"))
        .as("stderr: %s", command.err())
        .isEqualTo(2);
    assertThat(command.err()).startsWith("lora: Invalid value for option '--dtype': 'fp4' is not keep, fp32, fp16, bf16, fp8 (fp8_e4m3) or fp8_e5m2");
    assertThat(output).doesNotExist();
  }

  @Test
  void aModuleMissingFromTheBaseIsBadInputNamingTheFlagThatAllowsIt() throws IOException {
    Path[] inputs = tinyBaseAndAdapter(true);
    Path output = temp.resolve("out.safetensors");
    assertThat(command.run("fuse", "--base", inputs[0].toString(), "-o", output.toString(), inputs[1] + "=1"))
        .as("stderr: %s", command.err())
        .isEqualTo(3);
    assertThat(command.err().lines()).as("one line").hasSize(1);
    assertThat(command.err())
        .as("the library's setting, in the command's words")
        .contains("1 of 3 modules have no weight in the target")
        .contains("; --allow-missing fuses the other 2")
        .doesNotContain("allowUnmatched");
    assertThat(output).doesNotExist();
    assertThat(command.run("fuse", "--base", inputs[0].toString(), "-o", output.toString(), "--allow-missing", inputs[1] + "=1"))
        .as("with the flag; stderr: %s", command.err())
        .isZero();
  }
}

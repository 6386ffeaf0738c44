package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.Safetensors;
import dev.loramerge.testing.GoldenFiles;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class LoraCommandTest {
  @TempDir Path temp;

  /** What one run printed and returned. */
  private record Run(int exitCode, String out, String err) {}

  private static Run run(String... args) {
    CommandRun command = new CommandRun();
    int code = command.run(args);
    return new Run(code, command.out(), command.err());
  }

  @Test
  void convertKohyaToPeftMatchesPeftsOwnAdapter() throws IOException {
    for (String name : new String[] {"style", "subject", "detail"}) {
      Path output = temp.resolve(name);
      Run run = run("convert", "--to", "peft", "-o", output.toString(), GoldenFiles.peft021("kohya/" + name + ".safetensors").toString());
      assertThat(run.exitCode()).as("exit code; stderr: %s", run.err()).isZero();
      LoraAdapter converted = LoraFiles.read(output);
      LoraAdapter golden = LoraFiles.read(GoldenFiles.peft021("adapters/" + name));
      assertThat(converted.modules().keySet()).isEqualTo(golden.modules().keySet());
      for (ModuleKey key : golden.modules().keySet()) {
        LoraModule want = golden.modules().get(key);
        assertThat(java.util.Arrays.equals(converted.modules().get(key).deltaF64(), want.deltaF64()))
            .as("%s: s·B·A of %s is identical", name, key)
            .isTrue();
      }
    }
  }

  @Test
  void inspectDescribesAnAdapter() {
    Run run = run("inspect", GoldenFiles.peft021("kohya/style.safetensors").toString());
    assertThat(run.exitCode()).as("stderr: %s", run.err()).isZero();
    assertThat(run.out())
        .contains("format        kohya")
        .contains("modules       28 (unet linear ×26, unet conv ×2)")
        .contains("ranks         8 ×28")
        .contains("alphas        16 ×28")
        .contains("scales        2 ×28")
        .contains("ss_network_dim = 8");
  }

  @Test
  void missingInputIsBadInputWithOneLine() {
    Run run = run("inspect", temp.resolve("nothing.safetensors").toString());
    assertThat(run.exitCode()).isEqualTo(3);
    assertThat(run.err().strip()).isEqualTo("lora: " + temp.resolve("nothing.safetensors") + ": no such file or folder");
  }

  @Test
  void malformedFileIsBadInputWithoutStackTrace() throws IOException {
    Path broken = temp.resolve("broken.safetensors");
    Files.write(broken, new byte[] {1, 2, 3});
    Run run = run("inspect", broken.toString());
    assertThat(run.exitCode()).isEqualTo(3);
    assertThat(run.err().lines()).hasSize(1);
    assertThat(run.err()).startsWith("lora: broken.safetensors: ");
  }

  @Test
  void verboseAddsTheStackTrace() throws IOException {
    Path broken = temp.resolve("broken.safetensors");
    Files.write(broken, new byte[] {1, 2, 3});
    Run run = run("inspect", "--verbose", broken.toString());
    assertThat(run.exitCode()).isEqualTo(3);
    assertThat(run.err().lines().count()).isGreaterThan(3);
    assertThat(run.err()).contains("\tat dev.loramerge.");
  }

  @Test
  void usageErrorsExitWithTwo() {
    assertThat(run("convert", "--to", "onnx", "-o", "x", "y").exitCode()).isEqualTo(2);
    assertThat(run("convert", "--to", "onnx", "-o", "x", "y").err())
        .startsWith("lora: Invalid value for option '--to': 'onnx' is not a format; expected peft, kohya or diffusers");
    assertThat(run("frobnicate").exitCode()).isEqualTo(2);
    assertThat(run().exitCode()).isEqualTo(2);
  }

  @Test
  void compareReportsTheExactSumAsExactAndAReRankAsLossy() throws IOException {
    String style = GoldenFiles.peft021("kohya/style.safetensors") + "=1";
    String subject = GoldenFiles.peft021("kohya/subject.safetensors") + "=0.6";
    Path cat = temp.resolve("cat.safetensors");
    Path svd = temp.resolve("svd.safetensors");
    assertThat(run("merge", "-o", cat.toString(), style, subject).exitCode()).isZero();
    assertThat(run("merge", "-o", svd.toString(), "--algorithm", "svd", "--svd-rank", "4", style, subject).exitCode()).isZero();

    Run exact = run("compare", cat.toString(), style, subject);
    assertThat(exact.exitCode()).as("stderr: %s", exact.err()).isZero();
    String exactSummary = exact.out().lines().filter(line -> line.startsWith("summary:")).findFirst().orElseThrow();
    double exactError = Double.parseDouble(exactSummary.replaceAll(".*relative error ([^,]+),.*", "$1"));
    assertThat(exactError).as("cat is the exact weighted sum: %s", exactSummary).isLessThan(1e-6);
    assertThat(exactSummary)
        .contains("cosine 1.0000")
        .contains(String.format(java.util.Locale.ROOT, "kept style %.1f%% subject %.1f%%", 100 * keptByExactSum(1, 0), 100 * keptByExactSum(0.6, 1)));

    Run lossy = run("compare", svd.toString(), style, subject);
    String lossySummary = lossy.out().lines().filter(line -> line.startsWith("summary:")).findFirst().orElseThrow();
    double lossyError = Double.parseDouble(lossySummary.replaceAll(".*relative error ([^,]+),.*", "$1"));
    assertThat(lossyError).as("rank 4 of 16 loses energy: %s", lossySummary).isBetween(0.1, 1.0);
  }

  /**
   * What compare reports as kept of input {@code self} (weight {@code weight}) when the merge is
   * the exact sum of style (weight 1) and subject (weight 0.6): ⟨M, wΔ⟩ / ‖wΔ‖², from the inputs in
   * float64. It is 1 plus the other input's projection, not 1, where the updates correlate.
   */
  private static double keptByExactSum(double weight, int self) throws IOException {
    LoraAdapter[] inputs = {
      LoraFiles.read(GoldenFiles.peft021("kohya/style.safetensors")), LoraFiles.read(GoldenFiles.peft021("kohya/subject.safetensors"))
    };
    double[] weights = {1, 0.6};
    double dot = 0;
    double squared = 0;
    for (ModuleKey key : inputs[0].modules().keySet()) {
      double[] own = inputs[self].modules().get(key).deltaF64();
      double[] other = inputs[1 - self].modules().get(key).deltaF64();
      for (int i = 0; i < own.length; i++) {
        double mine = weight * own[i];
        dot += (mine + weights[1 - self] * other[i]) * mine;
        squared += mine * mine;
      }
    }
    return dot / squared;
  }

  @Test
  void inspectStatsFlagsCancelledModules() throws IOException {
    LoraAdapter style = LoraFiles.read(GoldenFiles.peft021("kohya/style.safetensors"));
    ModuleKey first = style.modules().firstKey();
    LoraModule original = style.modules().get(first);
    LoraAdapter withZero =
        style.toBuilder()
            .put(LoraModule.of(first, original.down(), dev.loramerge.TensorData.ofFloats(new float[Math.toIntExact(original.up().numel())], original.up().shape()), original.alpha()))
            .build();
    Path file = temp.resolve("cancelled.safetensors");
    LoraFiles.write(withZero, file, dev.loramerge.io.LoraFormat.KOHYA);
    Run run = run("inspect", "--stats", file.toString());
    assertThat(run.exitCode()).as("stderr: %s", run.err()).isZero();
    assertThat(run.out().lines().filter(line -> line.startsWith(first.toString())).findFirst().orElseThrow())
        .endsWith("cancelled");
    assertThat(run.out()).contains("28 modules, median ‖s·B·A‖").contains(", 1 cancelled");
  }

  @Test
  void demoRunsAndChecksItsConversions() {
    Run run = run("demo");
    assertThat(run.exitCode()).as("stderr: %s", run.err()).isZero();
    assertThat(run.out()).contains("as SDXL").contains("0 (exact)");
  }

  @Test
  void convertRefusesToWriteOverItsInput() throws IOException {
    Path style = temp.resolve("style.safetensors");
    LoraFiles.write(TinyLora.adapter("style", 4, 4, 1), style, LoraFormat.KOHYA);
    byte[] before = Files.readAllBytes(style);
    Run run = run("convert", "--to", "kohya", "-o", style.toString(), style.toString());
    assertThat(run.exitCode()).as("stderr: %s", run.err()).isEqualTo(2);
    assertThat(run.err()).startsWith("lora: Invalid value for option '--output': " + style + " is the input " + style);
    assertThat(Files.readAllBytes(style)).as("the input is unchanged").isEqualTo(before);
  }

  @Test
  void theLibrarysSettingsAreNamedAsTheCommandsFlags() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("lora_unet_mid_block_attentions_0_proj_out.lora_down.weight", TensorData.ofFloats(new float[64], 4, 16));
    tensors.put("lora_unet_mid_block_attentions_0_proj_out.lora_up.weight", TensorData.ofFloats(new float[64], 16, 4));
    // LyCORIS OFT's blocks: a kind this tool does not read.
    tensors.put("lora_unet_mid_block_attentions_0_proj_out.oft_blocks", TensorData.ofFloats(new float[16], 1, 4, 4));
    Path oft = temp.resolve("oft.safetensors");
    Safetensors.write(oft, tensors, Map.of());
    Run run = run("inspect", oft.toString());
    assertThat(run.exitCode()).as("stderr: %s", run.err()).isEqualTo(3);
    assertThat(run.err().strip())
        .as("skipUnsupported(true) becomes the flag")
        .endsWith("; --skip-unsupported drops them")
        .doesNotContain("skipUnsupported");
    assertThat(run("inspect", "--skip-unsupported", oft.toString()).exitCode()).as("with the flag").isZero();

    Map<String, TensorData> custom = new LinkedHashMap<>();
    custom.put("lora_unet_my_custom_block_proj.lora_down.weight", TensorData.ofFloats(new float[64], 4, 16));
    custom.put("lora_unet_my_custom_block_proj.lora_up.weight", TensorData.ofFloats(new float[64], 16, 4));
    Path unresolved = temp.resolve("custom.safetensors");
    Safetensors.write(unresolved, custom, Map.of());
    run = run("inspect", unresolved.toString());
    assertThat(run.exitCode()).isEqualTo(3);
    assertThat(run.err().strip()).as("baseKeys becomes the flag").endsWith("; give --base with the model's weights");
  }
}

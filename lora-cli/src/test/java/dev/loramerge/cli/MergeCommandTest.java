package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.json.Json;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.GoldenFiles;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

/** {@code lora merge} on PEFT 0.21's golden cases, as a user would run it. */
class MergeCommandTest {
  @TempDir Path temp;

  @SuppressWarnings("unchecked")
  static Stream<Map<String, Object>> deterministicCases() throws IOException {
    Map<String, Object> cases = Json.parseObject(Files.readString(GoldenFiles.peft021("cases.json")));
    return ((List<Map<String, Object>>) cases.get("cases"))
        .stream().filter(c -> !((String) c.get("combination_type")).startsWith("dare"));
  }

  @SuppressWarnings("unchecked")
  @ParameterizedTest(name = "{0}")
  @MethodSource("deterministicCases")
  void matchesPeftOnEveryDeterministicCase(Map<String, Object> goldenCase) throws IOException {
    String id = (String) goldenCase.get("id");
    String type = (String) goldenCase.get("combination_type");
    Path output = temp.resolve(id);
    List<String> args = new ArrayList<>(List.of("merge", "-o", output.toString(), "--format", "peft", "--algorithm", type));
    if (goldenCase.containsKey("density")) {
      args.addAll(List.of("--density", goldenCase.get("density").toString()));
    }
    if (goldenCase.containsKey("majority_sign_method")) {
      args.addAll(List.of("--majority-sign", (String) goldenCase.get("majority_sign_method")));
    }
    if (goldenCase.containsKey("svd_rank")) {
      args.addAll(List.of("--svd-rank", goldenCase.get("svd_rank").toString()));
    }
    List<String> adapters = (List<String>) goldenCase.get("adapters");
    List<BigDecimal> weights = (List<BigDecimal>) goldenCase.get("weights");
    for (int i = 0; i < adapters.size(); i++) {
      args.add(GoldenFiles.peft021("adapters/" + adapters.get(i)) + "=" + weights.get(i));
    }
    CommandRun command = new CommandRun();
    assertThat(command.run(args)).as("exit code; stderr: %s", command.err()).isZero();

    LoraAdapter merged = LoraFiles.read(output);
    LoraAdapter golden = LoraFiles.read(GoldenFiles.peft021("merged/" + id));
    assertThat(merged.modules().keySet()).isEqualTo(golden.modules().keySet());
    double difference = 0;
    double norm = 0;
    for (ModuleKey key : golden.modules().keySet()) {
      double[] expected = golden.modules().get(key).deltaF64();
      double[] actual = merged.modules().get(key).deltaF64();
      for (int i = 0; i < expected.length; i++) {
        difference += (actual[i] - expected[i]) * (actual[i] - expected[i]);
        norm += expected[i] * expected[i];
      }
    }
    double tolerance = type.contains("svd") ? 1e-4 : 1e-5;
    assertThat(Math.sqrt(difference / norm)).as("%s: relative error over all modules", id).isLessThan(tolerance);
    assertThat(merged.metadata().get(LoraMerger.RECIPE_KEY))
        .as("the recipe names the method and the inputs' digests")
        .contains("\"algorithm\":\"" + type + "\"")
        .contains("\"sha256\":");
  }

  @Test
  void namesTheOutputAfterInputsMethodAndWeightsInsideAFolder() throws IOException {
    Path folder = Files.createDirectory(temp.resolve("out"));
    CommandRun command = new CommandRun();
    int code =
        command.run(
            List.of(
                "merge", "-o", folder.toString(), "--algorithm", "svd", "--svd-rank", "4",
                GoldenFiles.peft021("kohya/style.safetensors") + "=0.7",
                GoldenFiles.peft021("kohya/subject.safetensors") + "=0.5"));
    assertThat(code).as("stderr: %s", command.err()).isZero();
    Path expected = folder.resolve("style+subject_svd_0.7+0.5.safetensors");
    assertThat(expected).isRegularFile();
    assertThat(LoraFiles.read(expected).modules().values()).allSatisfy(module -> assertThat(module.rank()).isEqualTo(4));
  }

  /** Two small kohya files built in code: the inputs of the contract tests. */
  private List<String> tinyInputs() throws IOException {
    Path style = temp.resolve("style.safetensors");
    Path subject = temp.resolve("subject.safetensors");
    LoraFiles.write(TinyLora.adapter("style", 4, 4, 1), style, LoraFormat.KOHYA);
    LoraFiles.write(TinyLora.adapter("subject", 2, 1, 2), subject, LoraFormat.KOHYA);
    return List.of(style + "=0.7", subject + "=0.5");
  }

  @ParameterizedTest(name = "{0}")
  @CsvSource(
      delimiter = '|',
      value = {
        "--algorithm frobnicate | Invalid value for option '--algorithm': unknown merge method 'frobnicate'; expected one of cat,",
        "--algorithm ties | --algorithm ties needs --density (the fraction of entries kept, in (0, 1])",
        "--algorithm ties --density 1.5 | Invalid value for option '--density': density must be in (0, 1], got 1.5",
        "--algorithm ties --density 0.5 --majority-sign most | Invalid value for option '--majority-sign': 'most' is not total or frequency",
        "--svd-rank 0 | Invalid value for option '--svd-rank': rank must be positive, got 0",
        "--svd-clamp 2 | Invalid value for option '--svd-clamp': svd clamp quantile must be in (0, 1], got 2.0",
        "--prune-threshold 0.1 --prune-density 0.5 | give --prune-threshold or --prune-density, not both",
        "--prune-density 0 | Invalid value for option '--prune-density': prune density must be in (0, 1], got 0.0",
        "--dynamic-method sv_ratio | --dynamic-method sv_ratio needs --dynamic-param",
        "--dynamic-method sv_max --dynamic-param 2 | Invalid value for option '--dynamic-method': unknown dynamic rank method 'sv_max'",
        "--dynamic-method sv_ratio --dynamic-param 0.5 | Invalid value for option '--dynamic-param': sv_ratio must be at least 1, got 0.5",
        "--dtype fp4 | Invalid value for option '--dtype': 'fp4' is not fp32, fp16 or bf16",
        "--dtype fp8 | Invalid value for option '--dtype': 'fp8': a merge writes LoRA factors, which lose too much in float8;"
            + " merge in fp16 or bf16 and give `lora fuse` --dtype fp8",
        "--blocks 2:ALL | Invalid value for option '--blocks': '2:ALL' names input 2, but there are 2 inputs (0 to 1)",
        "--blocks 0:ALL --blocks 0:NONE | --blocks given twice for input 0",
        "--architecture sd3 | Invalid value for option '--architecture': unknown architecture 'sd3', expected one of",
      })
  void usageErrorsExitWithTwoNamingTheFlag(String options, String message) throws IOException {
    List<String> args = new ArrayList<>(List.of("merge", "-o", temp.resolve("x.safetensors").toString()));
    args.addAll(List.of(options.split(" ")));
    args.addAll(tinyInputs());
    CommandRun command = new CommandRun();
    assertThat(command.run(args)).as("exit code; stderr: %s", command.err()).isEqualTo(2);
    assertThat(command.err().lines())
        .as("the message, then where to find help")
        .hasSize(2)
        .first()
        .asString()
        .startsWith("lora: " + message);
    assertThat(command.err().lines().skip(1)).containsExactly("Try 'lora merge --help' for more information.");
    assertThat(temp.resolve("x.safetensors")).doesNotExist();
  }

  @Test
  void blockWeightsThatDoNotFitTheArchitectureAreAUsageError() throws IOException {
    Path style = temp.resolve("style.safetensors");
    LoraFiles.write(TinyLora.adapter("style", 4, 4, 1), style, LoraFormat.KOHYA);
    CommandRun command = new CommandRun();
    int code = command.run(
        List.of("merge", "-o", temp.resolve("x.safetensors").toString(), "--architecture", "sd15", "--blocks", "0:1,0", style.toString()));
    assertThat(code).as("stderr: %s", command.err()).isEqualTo(2);
    // The toy shapes fit no architecture: the read says so, then the block weights are refused.
    assertThat(command.err().lines())
        .first()
        .asString()
        .startsWith("lora: warning: " + style + ": by the architecture given the adapter is for SD1.5")
        .endsWith("as none fits");
    assertThat(command.err()).contains("\nlora: Invalid value for option '--blocks': SD1.5 block weights take ");
  }

  @Test
  void anOutputThatIsAnInputIsRefused() throws IOException {
    List<String> inputs = tinyInputs();
    Path style = temp.resolve("style.safetensors");
    byte[] before = Files.readAllBytes(style);
    Path link = Files.createSymbolicLink(temp.resolve("link.safetensors"), style);
    for (Path output : List.of(style, link, temp.resolve(".").resolve("style.safetensors"))) {
      CommandRun command = new CommandRun();
      List<String> args = new ArrayList<>(List.of("merge", "-o", output.toString()));
      args.addAll(inputs);
      assertThat(command.run(args)).as("-o %s; stderr: %s", output, command.err()).isEqualTo(2);
      assertThat(command.err())
          .startsWith("lora: Invalid value for option '--output': " + output + " is the input " + style + "; inputs are never modified");
    }
    assertThat(Files.readAllBytes(style)).as("the input is unchanged").isEqualTo(before);
  }

  @Test
  void aPeftFolderThatIsAnInputIsRefused() throws IOException {
    Path folder = temp.resolve("style");
    LoraFiles.write(TinyLora.adapter("style", 4, 4, 1), folder, LoraFormat.PEFT);
    Path weights = folder.resolve("adapter_model.safetensors");
    byte[] before = Files.readAllBytes(weights);
    for (String input : List.of(folder.toString(), weights.toString())) {
      CommandRun command = new CommandRun();
      int code = command.run(List.of("merge", "-o", folder.toString(), "--format", "peft", input + "=0.5"));
      assertThat(code).as("input %s; stderr: %s", input, command.err()).isEqualTo(2);
      assertThat(command.err()).contains("is the input " + input + "; inputs are never modified");
    }
    assertThat(Files.readAllBytes(weights)).as("the input is unchanged").isEqualTo(before);
  }

  @Test
  void aBrokenInputFileIsBadInput() throws IOException {
    List<String> inputs = tinyInputs();
    Path style = temp.resolve("style.safetensors");
    byte[] bytes = Files.readAllBytes(style);
    Files.write(style, java.util.Arrays.copyOf(bytes, bytes.length - 10));
    CommandRun command = new CommandRun();
    List<String> args = new ArrayList<>(List.of("merge", "-o", temp.resolve("x.safetensors").toString()));
    args.addAll(inputs);
    assertThat(command.run(args)).as("stderr: %s", command.err()).isEqualTo(3);
    assertThat(command.err().lines()).as("one line").hasSize(1).first().asString().startsWith("lora: style.safetensors: ");
    assertThat(temp.resolve("x.safetensors")).doesNotExist();
  }
}

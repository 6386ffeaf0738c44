package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMerger;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.Json;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.testing.GoldenFiles;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
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
import org.junit.jupiter.params.provider.MethodSource;

/** {@code lora merge} on PEFT 0.21's golden cases, as a user would run it. */
class MergeCommandTest {
  @TempDir Path temp;

  private static int run(List<String> args, StringWriter err) {
    return LoraCommand.execute(args.toArray(String[]::new), new PrintWriter(new StringWriter(), true), new PrintWriter(err, true));
  }

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
    StringWriter err = new StringWriter();
    assertThat(run(args, err)).as("exit code; stderr: %s", err).isZero();

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
    StringWriter err = new StringWriter();
    int code =
        run(
            List.of(
                "merge", "-o", folder.toString(), "--algorithm", "svd", "--svd-rank", "4",
                GoldenFiles.peft021("kohya/style.safetensors") + "=0.7",
                GoldenFiles.peft021("kohya/subject.safetensors") + "=0.5"),
            err);
    assertThat(code).as("stderr: %s", err).isZero();
    Path expected = folder.resolve("style+subject_svd_0.7+0.5.safetensors");
    assertThat(expected).isRegularFile();
    assertThat(LoraFiles.read(expected).modules().values()).allSatisfy(module -> assertThat(module.rank()).isEqualTo(4));
  }

  @Test
  void aMethodThatNeedsADensitySaysSo() {
    StringWriter err = new StringWriter();
    int code =
        run(
            List.of("merge", "-o", temp.resolve("x.safetensors").toString(), "--algorithm", "ties",
                GoldenFiles.peft021("kohya/style.safetensors").toString()),
            err);
    assertThat(code).isEqualTo(3);
    assertThat(err.toString().strip()).isEqualTo("lora: ties needs a density (the fraction of entries kept, in (0, 1])");
    assertThat(temp.resolve("x.safetensors")).doesNotExist();
  }
}

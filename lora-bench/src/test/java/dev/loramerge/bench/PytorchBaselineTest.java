package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.util.OptionalInt;
import org.junit.jupiter.api.Test;

class PytorchBaselineTest {
  private static final String REPORT =
      """
      {
       "torch": "1.13.0a0",
       "blas": "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
       "threads": 2,
       "operations": [
        {"name": "merge/cat", "median_s": 0.96, "min_s": 0.9, "max_s": 1.25, "runs": 3, "modules": 722},
        {"name": "merge/svd", "median_s": 650.5, "min_s": 650.5, "max_s": 650.5, "runs": 1, "modules": 722,
         "sampled_modules": 73}
       ]
      }
      """;

  @Test
  void readsTheScriptsReport() throws IOException {
    PytorchBaseline.Report report = PytorchBaseline.parse(REPORT);
    assertThat(report.torch()).isEqualTo("1.13.0a0");
    assertThat(report.blas()).endsWith("libopenblasp-r0.3.21.so");
    assertThat(report.threads()).isEqualTo(2);
    assertThat(report.operations()).containsOnlyKeys("merge/cat", "merge/svd");
    assertThat(report.operations().get("merge/cat"))
        .isEqualTo(new PytorchBaseline.Operation("merge/cat", 0.96, 0.9, 1.25, 3, OptionalInt.empty(), 722));
    assertThat(report.operations().get("merge/svd").sampledModules()).as("scaled from a sample").hasValue(73);
  }

  @Test
  void saysWhenTheScriptPrintedNoReport() {
    assertThatThrownBy(() -> PytorchBaseline.parse("Traceback (most recent call last):"))
        .isInstanceOf(IOException.class)
        .hasMessageStartingWith("peft_cpu.py printed no JSON report: ");
    assertThatThrownBy(() -> PytorchBaseline.parse(""))
        .isInstanceOf(IOException.class)
        .hasMessageStartingWith("peft_cpu.py printed no JSON report: ");
  }

  @Test
  void namesTheFieldThatIsMissingOrMistyped() {
    assertThatThrownBy(() -> PytorchBaseline.parse(REPORT.replace("\"median_s\": 0.96, ", "")))
        .isInstanceOf(IOException.class)
        .hasMessage("peft_cpu.py: operations[0] has no 'median_s'");
    assertThatThrownBy(() -> PytorchBaseline.parse(REPORT.replace("\"median_s\": 650.5", "\"median_s\": \"slow\"")))
        .isInstanceOf(IOException.class)
        .hasMessage("peft_cpu.py: operations[1].median_s is the string 'slow', expected a number");
    assertThatThrownBy(() -> PytorchBaseline.parse(REPORT.replace("\"torch\": \"1.13.0a0\",", "")))
        .isInstanceOf(IOException.class)
        .hasMessage("peft_cpu.py: its report has no 'torch'");
    assertThatThrownBy(() -> PytorchBaseline.parse("{\"torch\": \"1.13\", \"operations\": {}}"))
        .isInstanceOf(IOException.class)
        .hasMessage("peft_cpu.py: operations is an object, expected an array");
  }
}

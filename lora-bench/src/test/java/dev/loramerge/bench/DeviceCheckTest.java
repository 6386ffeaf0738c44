package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.djl.engine.Engine;
import dev.loramerge.internal.json.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The check's CPU path: device and CPU are then both the CPU, so every byte must agree. */
class DeviceCheckTest {
  @TempDir Path folder;

  @Test
  @SuppressWarnings("unchecked")
  void cpuAgainstCpuPassesOnLinearAndConvWeightsAndReportsBf16() throws IOException {
    Path json = folder.resolve("check.json");
    int status = DeviceCheck.run(List.of("--device", "cpu", "--modules", "6", "--json", json.toString()));

    Map<String, Object> report = Json.parseObject(Files.readString(json));
    Map<String, Object> bf16 = (Map<String, Object>) report.get("bf16");
    List<Map<String, Object>> results = (List<Map<String, Object>>) report.get("results");
    assertThat(status).as("%s", report).isZero();
    List<String> types = (Boolean) bf16.get("supported") ? List.of("F32", "F16", "BF16") : List.of("F32", "F16");
    List<String> orderRows = types.stream().filter(type -> !type.equals("F32")).map(type -> type + " summation order").toList();
    List<String> overflowRows = types.stream().filter(type -> !type.equals("F32")).map(type -> type + " overflow").toList();
    assertThat(results).extracting(row -> row.get("dtype"))
        .as("bf16 compared exactly when the JNI library holds it: %s", bf16)
        .isEqualTo(Stream.of(types, orderRows, overflowRows).flatMap(List::stream).toList());
    for (Map<String, Object> row : results) {
      boolean order = orderRows.contains(row.get("dtype"));
      boolean overflow = overflowRows.contains(row.get("dtype"));
      assertThat(List.of("weights", "conv_weights", "differing_elements", "not_restored_weights"))
          .extracting(key -> ((Number) row.get(key)).longValue())
          .as("%s", row)
          .containsExactly(order ? 1L : overflow ? 5L : 6L, order || overflow ? 0L : 2L, 0L, 0L);
      if (overflow) {
        assertThat((String) row.get("device_failure")).as("%s", row).contains("check.m2").isEqualTo(row.get("cpu_failure"));
        assertThat(row.get("same_failure")).as("%s", row).isEqualTo(true);
      }
    }
    assertThat((String) bf16.get("message")).isNotEmpty();
  }

  @Test
  void requiringBf16FailsWhereTheJniLibraryAbortsOnIt() throws IOException {
    assumeTrue(!Devices.probeBf16(ai.djl.Device.cpu()).supported(), "this JNI library holds bf16");
    assertThat(DeviceCheck.run(List.of("--device", "cpu", "--modules", "3", "--require-bf16"))).isEqualTo(1);
  }

  @Test
  void gpuWithoutOneAndUnknownOptionsStop() {
    assumeTrue(Engine.getInstance().getGpuCount() == 0, "a GPU is visible here");
    assertThatThrownBy(() -> DeviceCheck.run(List.of("--device", "gpu")))
        .isInstanceOf(IllegalStateException.class)
        .hasMessageEndingWith("; run with --device cpu to check the CPU path against itself");
    assertThatThrownBy(() -> DeviceCheck.run(List.of("--cycles", "3")))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageStartingWith("unknown option --cycles\nusage: bin/lora-bench check");
  }
}

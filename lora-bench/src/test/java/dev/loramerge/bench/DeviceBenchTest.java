package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.djl.engine.Engine;
import dev.loramerge.internal.json.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The device bench's CPU path: the report a GPU run gives, with CPU arrays on both sides. */
class DeviceBenchTest {
  @TempDir Path folder;

  @SuppressWarnings("unchecked")
  private static Map<String, Map<String, Object>> operations(Map<String, Object> report) {
    Map<String, Map<String, Object>> byName = new LinkedHashMap<>();
    for (Map<String, Object> operation : (List<Map<String, Object>>) report.get("operations")) {
      byName.put((String) operation.get("name"), operation);
    }
    return byName;
  }

  private static long number(Map<String, Object> operation, String key) {
    return ((Number) operation.get(key)).longValue();
  }

  @Test
  @SuppressWarnings("unchecked")
  void cpuRunReportsFuseHotSwapBytesAndMergesWithNothingChanged() throws IOException {
    Path json = folder.resolve("device.json");
    int status =
        DeviceBench.run(
            List.of("--device", "cpu", "--modules", "4", "--rank", "4", "--cycles", "3", "--runs", "1", "--methods", "cat,ties",
                "--json", json.toString()));

    Map<String, Object> report = Json.parseObject(Files.readString(json));
    assertThat(status).as("%s", report).isZero();
    Map<String, Map<String, Object>> operations = operations(report);
    boolean bf16 = (Boolean) ((Map<String, Object>) report.get("bf16")).get("supported");
    List<String> expected = new java.util.ArrayList<>(List.of("fuse/memory", "unfuse/memory", "fuse/memory/separate-product", "fuse/memory/libtorch-rounding", "fuse/memory/libtorch-float64-factors",
        "fuse/memory/factors-kept", "fuse/factors", "hotswap", "hotswap/factors-kept", "bytes/F32", "bytes/F16"));
    if (bf16) {
      expected.add("bytes/BF16");
    }
    expected.addAll(List.of("merge/cat", "merge/ties"));
    assertThat(operations.keySet()).containsExactlyElementsOf(expected);
    assertThat(report.get("skipped").toString()).isEqualTo(bf16 ? "[]" : "[bytes/BF16: " + ((Map<String, Object>) report.get("bf16")).get("message") + "]");
    assertThat(number(report, "modules")).isEqualTo(4);
    assertThat(report.get("device")).isEqualTo("cpu()");
    assertThat(number(report, "merge_threads")).as("one per processor by default").isEqualTo(Runtime.getRuntime().availableProcessors());

    for (String swapName : List.of("hotswap", "hotswap/factors-kept")) {
      Map<String, Object> swap = operations.get(swapName);
      assertThat(List.of("cycles", "cycles_done", "weights", "differing_weights")).extracting(key -> number(swap, key))
          .as("%s", swap).containsExactly(3L, 3L, 4L, 0L);
    }
    for (String name : expected) {
      Map<String, Object> operation = operations.get(name);
      if (name.startsWith("bytes/")) {
        assertThat(List.of("weights", "differing_elements", "differing_elements_factors_kept", "not_restored_weights"))
            .extracting(key -> number(operation, key))
            .as("%s", operation).containsExactly(4L, 0L, 0L, 0L);
        assertThat(number(operation, "elements")).as("the first 4 SDXL attention weights are 640x640").isEqualTo(4 * 640 * 640);
      } else if (name.startsWith("merge/")) {
        assertThat(number(operation, "differing_modules_vs_cpu")).as("%s", operation).isZero();
        assertThat(number(operation, "modules")).isEqualTo(4);
      } else if (!name.startsWith("hotswap")) {
        assertThat(((Number) operation.get("median_s")).doubleValue()).as("%s", operation).isPositive();
      }
    }
    assertThat((Map<String, Object>) report.get("device_memory_bytes")).as("no device memory figures on the CPU")
        .allSatisfy((key, value) -> assertThat(value).isNull());
  }

  @Test
  @SuppressWarnings("unchecked")
  void pastTheDeadlineTheRemainingSectionsAreSkippedAndSaySo() throws IOException {
    Path json = folder.resolve("late.json");
    // The hot-swap runs until the deadline (if the fuse starts before it): whatever follows is late.
    int status =
        DeviceBench.run(
            List.of("--device", "cpu", "--modules", "1", "--rank", "2", "--runs", "1", "--cycles", "100000000", "--deadline-s", "1",
                "--methods", "cat", "--json", json.toString()));

    Map<String, Object> report = Json.parseObject(Files.readString(json));
    assertThat(status).isZero();
    assertThat((List<String>) report.get("skipped")).as("%s", report).contains("bytes/F32: deadline passed", "merge/cat: deadline passed");
    assertThat(operations(report).keySet()).doesNotContain("bytes/F32", "merge/cat");
  }

  @Test
  @SuppressWarnings("unchecked")
  void hotSwapStopsAtItsTimeLimitAndReportsTheCyclesDone() throws IOException {
    Path json = folder.resolve("swap.json");
    int status =
        DeviceBench.run(
            List.of("--device", "cpu", "--modules", "1", "--rank", "2", "--runs", "1", "--cycles", "100000000", "--hotswap-s", "1",
                "--skip-bytes", "--skip-merge", "--json", json.toString()));

    Map<String, Object> report = Json.parseObject(Files.readString(json));
    Map<String, Object> swap = operations(report).get("hotswap");
    assertThat(status).as("%s", report).isZero();
    assertThat(number(swap, "cycles_done")).as("%s", swap).isPositive().isLessThan(100_000_000L);
    assertThat(number(swap, "differing_weights")).isZero();
    Map<String, Object> keptSwap = operations(report).get("hotswap/factors-kept");
    assertThat((List<String>) report.get("skipped")).containsExactly(
        "hotswap: time limit reached after " + number(swap, "cycles_done") + " of 100000000 cycles",
        "hotswap/factors-kept: time limit reached after " + number(keptSwap, "cycles_done") + " of 100000000 cycles");
  }

  @Test
  void mergesRunOnTheThreadsAskedForAndTheReportSaysHowMany() throws IOException {
    Path json = folder.resolve("threads.json");
    int status =
        DeviceBench.run(
            List.of("--device", "cpu", "--modules", "2", "--rank", "2", "--runs", "1", "--threads", "1", "--skip-fuse",
                "--skip-bytes", "--methods", "svd", "--json", json.toString()));

    Map<String, Object> report = Json.parseObject(Files.readString(json));
    assertThat(status).as("%s", report).isZero();
    assertThat(number(report, "merge_threads")).isEqualTo(1);
    assertThat(number(operations(report).get("merge/svd"), "differing_modules_vs_cpu")).isZero();
    assertThatThrownBy(() -> DeviceBench.run(List.of("--threads", "0")))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageStartingWith("--threads takes a positive integer, got '0'");
  }

  @Test
  void gpuWithoutOneAndBadOptionsStopBeforeAnyWork() {
    assertThatThrownBy(() -> DeviceBench.run(List.of("--device", "cpu", "--methods", "cat,nope")))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("nope");
    assertThatThrownBy(() -> DeviceBench.run(List.of("--runs", "0")))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageStartingWith("--runs takes a positive integer, got '0'\nusage: bin/lora-bench device");
    assumeTrue(Engine.getInstance().getGpuCount() == 0, "a GPU is visible here");
    assertThatThrownBy(() -> DeviceBench.run(List.of("--device", "gpu")))
        .isInstanceOf(IllegalStateException.class)
        .hasMessageStartingWith("no GPU visible to DJL")
        .hasMessageEndingWith("; run with --device cpu for the same report on the CPU");
  }
}

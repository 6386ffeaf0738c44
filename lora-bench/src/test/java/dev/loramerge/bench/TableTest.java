package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalInt;
import org.junit.jupiter.api.Test;

class TableTest {
  private static Table javaRuns() {
    Table table = new Table(3);
    table.add(new Table.Row("merge/cat", new double[] {0.45, 0.5, 0.6}, 900, 400, Optional.empty(), 1200));
    table.add(new Table.Row("merge/svd", new double[] {1.5, 2.0, 2.5}, 900, 400, Optional.empty(), 466_850));
    table.add(new Table.Row("merge/file", new double[] {0.7, 0.73, 0.8}, 900, 400, Optional.empty(), -1));
    return table;
  }

  private static PytorchBaseline.Report pytorchRuns() {
    return new PytorchBaseline.Report(
        "1.13.0a0",
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
        2,
        Map.of(
            "merge/cat", new PytorchBaseline.Operation("merge/cat", 1.0, 0.9, 1.1, 3, OptionalInt.empty(), 722),
            "merge/svd", new PytorchBaseline.Operation("merge/svd", 650.0, 640.0, 660.0, 3, OptionalInt.of(73), 722),
            "fuse/memory", new PytorchBaseline.Operation("fuse/memory", 9.3, 9.0, 9.5, 3, OptionalInt.empty(), 722)));
  }

  @Test
  void sideBySideListsTheOperationsBothRanWithPytorchOverJava() {
    Table table = javaRuns();
    table.compareWith(pytorchRuns());
    assertThat(table.sideBySide())
        .as("merge/file ran only in Java, fuse/memory only in PyTorch")
        .isEqualTo(
            String.join(
                System.lineSeparator(),
                "PEFT's arithmetic in PyTorch 1.13.0a0 on the CPU, 2 threads, BLAS /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
                "operation                   java_s  pytorch_s    ratio",
                "merge/cat                    0.500      1.000     2.00",
                "merge/svd                    2.000    650.000   325.00  (PyTorch scaled from 73 of 722 modules)",
                ""));
  }

  @Test
  void jsonCarriesPytorchsMedianAndTheRatioWhereBothRan() {
    Table table = javaRuns();
    assertThat(table.json()).as("without --vs-pytorch").doesNotContain("pytorch");
    table.compareWith(pytorchRuns());
    String[] lines = table.json().split("\n");
    assertThat(lines[1]).endsWith("\"pytorch_median_s\":1.0000,\"ratio\":2.000},");
    assertThat(lines[2]).endsWith("\"pytorch_median_s\":650.0000,\"ratio\":325.000,\"pytorch_sampled_modules\":73},");
    assertThat(lines[3]).startsWith("  {\"name\":\"merge/file\"").doesNotContain("pytorch");
  }

  @Test
  void jsonCarriesTheMostPageFaultsOfARunWhereTheyWereCounted() {
    String[] lines = javaRuns().json().split("\n");
    assertThat(lines[2]).as("merge/svd").contains("\"peak_heap_mb\":400,\"max_minor_faults\":466850}");
    assertThat(lines[3]).as("merge/file, not counted").doesNotContain("faults");
  }

  @Test
  void minorFaultsCountTheFirstTouchOfFreshMemory() {
    long before = Table.minorFaults();
    // Java zeroes a direct buffer as it allocates it: every 4 KiB page is touched once.
    ByteBuffer fresh = ByteBuffer.allocateDirect(64 << 20);
    long after = Table.minorFaults();
    assertThat(fresh.capacity()).isEqualTo(64 << 20);
    assertThat(before).as("faults read from /proc/self/stat").isNotNegative();
    assertThat(after - before).as("faults while touching 64 MiB of fresh pages (16 384 pages)").isGreaterThan(8_000);
  }

  @Test
  void aCommandRunsWithTheEnvironmentItIsGiven() throws IOException {
    Table table = new Table(1);
    table.command("command/env", List.of("sh", "-c", "test \"$LORA_CACHE\" = sync"), Map.of("LORA_CACHE", "sync"));
    assertThatThrownBy(() -> table.command("command/env", List.of("sh", "-c", "test \"$LORA_CACHE\" = sync"), Map.of("LORA_CACHE", "off")))
        .as("the child sees the variable's value: the test in it fails with another")
        .isInstanceOf(IOException.class)
        .hasMessageContaining("exited with 1");
  }

  @Test
  void aFailingCommandIsReportedWithItsExitCodeAndLastLines() {
    List<String> command =
        List.of("sh", "-c", "echo progress; echo one; echo two; echo 'lora: base.safetensors: tensor w is F64, expected F16' >&2; exit 3");
    assertThatThrownBy(() -> new Table(1).command("command/fuse", command, Map.of()))
        .isInstanceOf(IOException.class)
        .satisfies(
            e ->
                assertThat(e.getMessage().lines().toList())
                    .as("the exit code, then the child's last three lines: its own error says why the benchmark stopped")
                    .containsExactly(
                        String.join(" ", command) + " exited with 3",
                        "  one",
                        "  two",
                        "  lora: base.safetensors: tensor w is F64, expected F16"));
  }
}

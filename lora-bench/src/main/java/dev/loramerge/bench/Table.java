package dev.loramerge.bench;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Locale;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.stream.Collectors;

/**
 * Times operations (a warm-up, then N runs) and prints and serializes the results, side by side
 * with PyTorch's when {@code --vs-pytorch} brought them.
 */
final class Table {
  /** An operation that may throw. */
  @FunctionalInterface
  interface Operation {
    Object run() throws IOException;
  }

  /**
   * One operation's sorted run times and peaks, and the most minor page faults of one timed run
   * (−1 where not measured: child processes, or no /proc).
   */
  record Row(String name, double[] seconds, long peakRssMb, long peakHeapMb, Optional<ReRankError> reRankError, long maxMinorFaults) {
    double median() {
      return seconds[seconds.length / 2];
    }
  }

  private final int runs;
  private final List<Row> rows = new ArrayList<>();
  /** Set by {@link #compareWith}; null without {@code --vs-pytorch}. */
  private PytorchBaseline.Report pytorch;

  Table(int runs) {
    this.runs = runs;
  }

  /**
   * Seconds of untimed runs before the timed ones (at least one run, at most {@link
   * #MAX_WARM_UPS}): C2 compiles a Vector API kernel after thousands of calls and until then runs
   * it boxed, so a merge of a few tenths of a second takes three or four runs to reach its
   * steady time (dare_linear: about 1.2 s a run, then 0.13–0.16 s), while one run of an *_svd
   * method is enough.
   */
  static final double WARM_UP_SECONDS = 3;

  static final int MAX_WARM_UPS = 8;

  void time(String name, Operation operation, Optional<ReRankError> reRankError) throws IOException {
    time(name, operation, reRankError, result -> {});
  }

  /**
   * Warms {@code operation} up (see {@link #WARM_UP_SECONDS}), then runs it {@code runs} times
   * timed, each after a full collection; {@code after} runs untimed after each.
   */
  void time(String name, Operation operation, Optional<ReRankError> reRankError, Consumer<Object> after) throws IOException {
    time(name, operation, reRankError, after, true);
  }

  /**
   * {@link #time} without the warm-up, for operations of minutes, whose first seconds warm the
   * JIT up and whose cost is the disk's.
   */
  void timeCold(String name, Operation operation) throws IOException {
    time(name, operation, Optional.empty(), result -> {}, false);
  }

  private void time(String name, Operation operation, Optional<ReRankError> reRankError, Consumer<Object> after, boolean warm)
      throws IOException {
    System.gc();
    resetPeakRss();
    long warmUpStart = System.nanoTime();
    for (int warmUp = 0; warm && warmUp < MAX_WARM_UPS && (warmUp == 0 || System.nanoTime() - warmUpStart < WARM_UP_SECONDS * 1e9); warmUp++) {
      after.accept(operation.run());
    }
    double[] seconds = new double[runs];
    long peakHeap = 0;
    long maxFaults = -1;
    for (int run = 0; run < runs; run++) {
      // Each run starts from the same state: a command runs one operation, and pays neither for
      // the garbage nor for the unreleased direct buffers of the run before.
      System.gc();
      long faultsBefore = minorFaults();
      long start = System.nanoTime();
      Object result = operation.run();
      seconds[run] = (System.nanoTime() - start) / 1e9;
      long faultsAfter = minorFaults();
      if (faultsBefore >= 0 && faultsAfter >= 0) {
        maxFaults = Math.max(maxFaults, faultsAfter - faultsBefore);
      }
      Runtime runtime = Runtime.getRuntime();
      peakHeap = Math.max(peakHeap, (runtime.totalMemory() - runtime.freeMemory()) >> 20);
      after.accept(result);
    }
    Arrays.sort(seconds);
    Row row = new Row(name, seconds, peakRssMb(), peakHeap, reRankError, maxFaults);
    add(row);
    System.out.println(format(row));
  }

  /**
   * Runs {@code command} as a child process once to warm the page cache and {@code runs} times
   * timed: wall seconds including JVM start, and the child's peak RSS (its VmHWM, read every few
   * milliseconds until it exits; the last reading is at most that much before the end). {@code
   * environment} is added to the child's.
   */
  void command(String name, List<String> command, Map<String, String> environment) throws IOException {
    runCommand(command, environment);
    double[] seconds = new double[runs];
    long peakRss = 0;
    for (int run = 0; run < runs; run++) {
      long start = System.nanoTime();
      peakRss = Math.max(peakRss, runCommand(command, environment));
      seconds[run] = (System.nanoTime() - start) / 1e9;
    }
    Arrays.sort(seconds);
    Row row = new Row(name, seconds, peakRss, 0, Optional.empty(), -1);
    add(row);
    System.out.println(format(row));
  }

  /**
   * Runs {@code command} to completion; its peak RSS in MiB. Its output goes to a temporary file,
   * not a pipe nobody drains, so that a failure can quote its last lines.
   */
  private static long runCommand(List<String> command, Map<String, String> environment) throws IOException {
    Path log = Files.createTempFile("lora-bench-command", ".log");
    try {
      ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile());
      builder.environment().putAll(environment);
      Process process = builder.start();
      Path status = Path.of("/proc", Long.toString(process.pid()), "status");
      long peak = 0;
      try {
        while (!process.waitFor(5, TimeUnit.MILLISECONDS)) {
          peak = Math.max(peak, highWaterMb(status));
        }
      } catch (InterruptedException e) {
        process.destroyForcibly();
        Thread.currentThread().interrupt();
        throw new InterruptedIOException("interrupted while running " + command);
      }
      if (process.exitValue() != 0) {
        throw new IOException(
            String.join(" ", command) + " exited with " + process.exitValue() + lastLines(log, FAILURE_LINES));
      }
      return peak;
    } finally {
      Files.deleteIfExists(log);
    }
  }

  private static final int FAILURE_LINES = 3;

  /** The last {@code count} non-blank lines of {@code log}, each after a line break, or "". */
  private static String lastLines(Path log, int count) throws IOException {
    List<String> lines = Files.readAllLines(log).stream().filter(line -> !line.isBlank()).toList();
    return lines.subList(Math.max(0, lines.size() - count), lines.size()).stream()
        .map(line -> System.lineSeparator() + "  " + line)
        .collect(Collectors.joining());
  }

  private static long highWaterMb(Path status) {
    try {
      for (String line : Files.readAllLines(status)) {
        if (line.startsWith("VmHWM:")) {
          return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024;
        }
      }
    } catch (IOException e) {
      // The process ended between the wait and the read, or there is no /proc.
    }
    return 0;
  }

  void add(Row row) {
    rows.add(row);
  }

  /** PyTorch's timings of the same operations, for {@link #sideBySide} and {@link #json}. */
  void compareWith(PytorchBaseline.Report report) {
    pytorch = report;
  }

  void print() {
    System.out.println();
    System.out.println(header());
    rows.forEach(row -> System.out.println(format(row)));
  }

  /** The operations both sides ran: medians and ratio, PyTorch's over the JVM's. */
  String sideBySide() {
    StringBuilder text =
        new StringBuilder(
            String.format(
                Locale.ROOT,
                "PEFT's arithmetic in PyTorch %s on the CPU, %d threads, BLAS %s%n%-24s %9s %10s %8s%n",
                pytorch.torch(),
                pytorch.threads(),
                pytorch.blas(),
                "operation",
                "java_s",
                "pytorch_s",
                "ratio"));
    for (Row row : rows) {
      PytorchBaseline.Operation other = pytorchRun(row);
      if (other != null) {
        text.append(
            String.format(
                Locale.ROOT,
                "%-24s %9.3f %10.3f %8.2f%s%n",
                row.name(),
                row.median(),
                other.medianSeconds(),
                other.medianSeconds() / row.median(),
                other.sampledModules().isPresent()
                    ? String.format(Locale.ROOT, "  (PyTorch scaled from %d of %d modules)", other.sampledModules().getAsInt(), other.modules())
                    : ""));
      }
    }
    return text.toString();
  }

  private static String header() {
    return String.format(
        Locale.ROOT,
        "%-24s %9s %9s %9s %5s %8s %8s %9s %10s %12s",
        "operation", "median_s", "min_s", "max_s", "runs", "heap_mb", "rss_mb", "faults_k", "rel_error", "excess_error");
  }

  private static String format(Row row) {
    return String.format(
        Locale.ROOT,
        "%-24s %9.3f %9.3f %9.3f %5d %8d %8d %9s %10s %12s",
        row.name(),
        row.median(),
        row.seconds()[0],
        row.seconds()[row.seconds().length - 1],
        row.seconds().length,
        row.peakHeapMb(),
        row.peakRssMb(),
        row.maxMinorFaults() < 0 ? "" : Long.toString(row.maxMinorFaults() / 1000),
        row.reRankError().map(error -> String.format(Locale.ROOT, "%.2e", error.relative())).orElse(""),
        row.reRankError().map(error -> String.format(Locale.ROOT, "%.2e", error.excess())).orElse(""));
  }

  String json() {
    StringBuilder json = new StringBuilder("[\n");
    for (int i = 0; i < rows.size(); i++) {
      Row row = rows.get(i);
      json.append(
          String.format(
              Locale.ROOT,
              "  {\"name\":\"%s\",\"median_s\":%.4f,\"min_s\":%.4f,\"max_s\":%.4f,\"runs\":%d,\"peak_rss_mb\":%d,\"peak_heap_mb\":%d%s%s%s}%s%n",
              row.name(),
              row.median(),
              row.seconds()[0],
              row.seconds()[row.seconds().length - 1],
              row.seconds().length,
              row.peakRssMb(),
              row.peakHeapMb(),
              row.maxMinorFaults() < 0 ? "" : String.format(Locale.ROOT, ",\"max_minor_faults\":%d", row.maxMinorFaults()),
              row.reRankError()
                  .map(error -> String.format(Locale.ROOT, ",\"rel_error\":%.3e,\"excess_error\":%.3e", error.relative(), error.excess()))
                  .orElse(""),
              pytorchJson(row),
              i + 1 < rows.size() ? "," : ""));
    }
    return json.append("]\n").toString();
  }

  private PytorchBaseline.Operation pytorchRun(Row row) {
    return pytorch == null ? null : pytorch.operations().get(row.name());
  }

  private String pytorchJson(Row row) {
    PytorchBaseline.Operation other = pytorchRun(row);
    if (other == null) {
      return "";
    }
    return String.format(Locale.ROOT, ",\"pytorch_median_s\":%.4f,\"ratio\":%.3f", other.medianSeconds(), other.medianSeconds() / row.median())
        + (other.sampledModules().isPresent() ? String.format(Locale.ROOT, ",\"pytorch_sampled_modules\":%d", other.sampledModules().getAsInt()) : "");
  }

  /**
   * The process's minor page faults so far (field 10 of /proc/self/stat), or −1 without /proc. A
   * fuse whose native copies land on fresh pages rather than reused memory takes hundreds of
   * thousands of them and up to twice the time; this column tells such a run from a slow kernel.
   */
  static long minorFaults() {
    try {
      String stat = Files.readString(Path.of("/proc/self/stat"));
      // The command name (field 2) may hold spaces; the fields after it are numbers.
      String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
      return Long.parseLong(fields[7]);
    } catch (IOException | NumberFormatException | IndexOutOfBoundsException e) {
      return -1;
    }
  }

  /** Resets the kernel's peak-RSS counter (VmHWM), so each operation reports its own peak. */
  private static void resetPeakRss() {
    try {
      Files.writeString(Path.of("/proc/self/clear_refs"), "5");
    } catch (IOException | UnsupportedOperationException e) {
      // Without /proc the peaks are cumulative; the table still reports them.
    }
  }

  /** The process's peak resident set since the last reset (VmHWM), in MiB; 0 without /proc. */
  private static long peakRssMb() {
    return highWaterMb(Path.of("/proc/self/status"));
  }
}

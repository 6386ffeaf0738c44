package dev.loramerge.bench;

import dev.loramerge.internal.json.Json;
import java.io.Console;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalInt;

/**
 * The side-by-side half of {@code e2e --vs-pytorch}: the same workload through PEFT's arithmetic
 * in PyTorch on the CPU, by {@code peft_cpu.py} (this module's {@code src/main/python}, packaged
 * next to this class) under Debian's python3-torch. Without OpenBLAS that torch multiplies
 * matrices with the reference BLAS, about 15× slower, so a run without it would be no baseline.
 */
final class PytorchBaseline {
  /** The interpreter Debian's python3-torch installs into; a pyenv or venv python3 on the PATH lacks it. */
  static final String DEBIAN_PYTHON = "/usr/bin/python3";

  private static final String SCRIPT = "peft_cpu.py";
  private static final String PACKAGES = "python3-torch libopenblas0-pthread";
  /** {@code peft_cpu.py --check}'s exit status when torch loaded a BLAS other than OpenBLAS. */
  private static final int NO_OPENBLAS = 3;

  /** One operation's timing; {@code sampledModules} is set when it was timed on that many of {@code modules} and scaled. */
  record Operation(String name, double medianSeconds, double minSeconds, double maxSeconds, int runs, OptionalInt sampledModules, int modules) {}

  /** The script's report: the torch it ran on and each operation by name. */
  record Report(String torch, String blas, int threads, Map<String, Operation> operations) {}

  private PytorchBaseline() {}

  /**
   * Whether {@code python} runs the script with torch on OpenBLAS. If not, on a terminal, offers
   * to install the Debian packages and checks again; otherwise prints the command and a one-line
   * message that the side-by-side part is skipped.
   */
  static boolean ensureReady(String python) throws IOException {
    String problem = problem(python);
    if (problem.isEmpty()) {
      return true;
    }
    String install = installCommand();
    Console console = System.console();
    if (console != null) {
      String answer = console.readLine("--vs-pytorch: %s. Run `%s` now? [y/N] ", problem, install);
      if (answer != null && answer.trim().toLowerCase(Locale.ROOT).startsWith("y")) {
        int status = waitFor(new ProcessBuilder("sh", "-c", install).inheritIO().start());
        problem = status == 0 ? problem(python) : String.format(Locale.ROOT, "the install exited with status %d", status);
        if (problem.isEmpty()) {
          return true;
        }
      }
    }
    System.out.printf(Locale.ROOT, "--vs-pytorch skipped: %s (install: %s)%n", problem, install);
    return false;
  }

  /** Runs the script with {@code arguments}; its progress goes to stderr as it comes. */
  static Report run(String python, List<String> arguments) throws IOException {
    List<String> command = new ArrayList<>(List.of(python, "-"));
    command.addAll(arguments);
    Process process = start(new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT));
    String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    int status = waitFor(process);
    if (status != 0) {
      throw new IOException(String.format(Locale.ROOT, "%s exited with status %d", SCRIPT, status));
    }
    return parse(output);
  }

  /** Reads the script's JSON report. */
  static Report parse(String json) throws IOException {
    Map<String, Object> report;
    try {
      report = Json.parseObject(json);
    } catch (IOException e) {
      throw new IOException(SCRIPT + " printed no JSON report: " + e.getMessage(), e);
    }
    Object list = field(report, "operations", "its report");
    if (!(list instanceof List)) {
      throw new IOException(SCRIPT + ": operations is " + Json.describe(list) + ", expected an array");
    }
    Map<String, Operation> operations = new LinkedHashMap<>();
    List<?> entries = (List<?>) list;
    for (int i = 0; i < entries.size(); i++) {
      String what = "operations[" + i + "]";
      if (!(entries.get(i) instanceof Map)) {
        throw new IOException(SCRIPT + ": " + what + " is " + Json.describe(entries.get(i)) + ", expected an object");
      }
      Map<?, ?> entry = (Map<?, ?>) entries.get(i);
      Object sampled = entry.get("sampled_modules");
      Operation operation =
          new Operation(
              string(entry, "name", what),
              number(entry, "median_s", what),
              number(entry, "min_s", what),
              number(entry, "max_s", what),
              (int) number(entry, "runs", what),
              sampled == null ? OptionalInt.empty() : OptionalInt.of((int) number(entry, "sampled_modules", what)),
              (int) number(entry, "modules", what));
      operations.put(operation.name(), operation);
    }
    return new Report(
        string(report, "torch", "its report"),
        string(report, "blas", "its report"),
        (int) number(report, "threads", "its report"),
        operations);
  }

  /** Empty when {@code python} has torch on OpenBLAS, otherwise what is missing. */
  private static String problem(String python) throws IOException {
    if (!Files.isExecutable(Path.of(python))) {
      return "no " + python;
    }
    Process process = start(new ProcessBuilder(python, "-", "--check").redirectErrorStream(true));
    String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
    int status = waitFor(process);
    if (status == 0) {
      return "";
    }
    String lastLine = output.substring(output.lastIndexOf('\n') + 1);
    return status == NO_OPENBLAS ? "torch does not use OpenBLAS (" + lastLine + ")" : lastLine;
  }

  /** Starts {@code builder} with the script on its standard input. */
  private static Process start(ProcessBuilder builder) throws IOException {
    Process process = builder.start();
    try (InputStream script = PytorchBaseline.class.getResourceAsStream(SCRIPT);
        OutputStream stdin = process.getOutputStream()) {
      if (script == null) {
        throw new IOException(SCRIPT + " is missing from the lora-bench jar");
      }
      script.transferTo(stdin);
    }
    return process;
  }

  private static String installCommand() throws IOException {
    boolean root = ((Integer) Files.getAttribute(Path.of("/proc/self"), "unix:uid")) == 0;
    String sudo = root ? "" : "sudo ";
    return sudo + "apt-get update && " + sudo + "apt-get install -y " + PACKAGES;
  }

  private static int waitFor(Process process) throws IOException {
    try {
      return process.waitFor();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      process.destroy();
      throw new IOException("interrupted while waiting for " + SCRIPT, e);
    }
  }

  private static Object field(Map<?, ?> object, String key, String what) throws IOException {
    if (!object.containsKey(key)) {
      throw new IOException(String.format(Locale.ROOT, "%s: %s has no '%s'", SCRIPT, what, key));
    }
    return object.get(key);
  }

  private static double number(Map<?, ?> object, String key, String what) throws IOException {
    return Json.number(field(object, key, what), SCRIPT + ": " + what + "." + key);
  }

  private static String string(Map<?, ?> object, String key, String what) throws IOException {
    Object value = field(object, key, what);
    if (!(value instanceof String)) {
      throw new IOException(SCRIPT + ": " + what + "." + key + " is " + Json.describe(value) + ", expected a string");
    }
    return (String) value;
  }
}

package dev.loramerge.cli;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.analysis.UpdateNorms;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.function.Function;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code lora inspect PATH}: what an adapter holds. */
@Command(
    name = "inspect",
    mixinStandardHelpOptions = true,
    description =
        "Show an adapter's format, architecture, modules, kinds, ranks, alphas, dtypes, size, metadata"
            + " and block coverage; with --modules, each module's name in the file and kind.")
final class InspectCommand implements Callable<Integer> {
  private static final int METADATA_VALUE_WIDTH = 100;

  @Spec CommandSpec spec;

  @Parameters(paramLabel = "PATH", description = "A PEFT folder or a kohya, diffusers, xlabs, comfyui or bfl .safetensors file.")
  Path path;

  @Option(
      names = "--stats",
      description =
          "Per module: mean, std, min and max of A and B, and the Frobenius norm of the update s·B·A;"
              + " modules whose update is below 1e-3 of the median are flagged as cancelled.")
  boolean stats;

  @Option(
      names = "--modules",
      description =
          "Per module: its name in the file (a part of a fused weight with its rows), its adapter kind, rank,"
              + " alpha, scale and block.")
  boolean modules;

  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, inputOptions.readOptions());
    LoraFormat format = file.format();
    LoraAdapter adapter = file.adapter();
    LoraFiles.Detected detected = file.architecture();
    Optional<Architecture> architecture = detected.architecture();
    PrintWriter out = spec.commandLine().getOut();
    out.println(path);
    row(out, "format", format.cliName());
    row(
        out,
        "architecture",
        architecture.map(arch -> arch.displayName() + detected.reason().map(reason -> " (" + reason + ")").orElse(""))
            .orElse("unknown (no known architecture's module set fits every module and shape)"));
    detected.warnings().forEach(warning -> row(out, "warning", warning));
    row(
        out,
        "modules",
        String.format(
            Locale.ROOT,
            "%d (%s)",
            adapter.size(),
            histogram(adapter, m -> m.key().component().prefix() + " " + m.kind().name().toLowerCase(Locale.ROOT))));
    if (adapter.modules().values().stream().anyMatch(module -> !module.isPlainLora())) {
      row(out, "kinds", histogram(adapter, LoraModule::kindName));
    }
    row(out, "ranks", histogram(adapter, m -> Integer.toString(m.rank())));
    row(out, "alphas", histogram(adapter, m -> number(m.alpha())));
    row(out, "scales", histogram(adapter, m -> number(m.scale()) + (m.scaleRule().name().equals("RSLORA") ? " (rsLoRA)" : "")));
    row(out, "dtypes", histogram(adapter, m -> m.dtype().safetensorsName()));
    row(out, "size", size(path) + ", " + parameters(adapter) + " parameters");
    architecture.ifPresent(arch -> row(out, "blocks", blocks(arch, adapter)));
    if (adapter.metadata().isEmpty()) {
      row(out, "metadata", "(none)");
    } else {
      row(out, "metadata", adapter.metadata().size() + " entries");
      adapter.metadata().forEach((key, value) -> out.println("    " + key + " = " + abbreviate(value)
          + (detected.recorded() && key.equals(Architecture.METADATA_KEY) ? "  (recorded on reading, not in the file)" : "")));
    }
    if (modules) {
      printModules(out, file, architecture);
    }
    if (stats) {
      printStats(out, adapter);
    }
    out.flush();
    return LoraCommand.OK;
  }

  /** Relative to the median, below this an update counts as cancelled. */
  private static final double CANCELLED = 1e-3;

  private static void printStats(PrintWriter out, LoraAdapter adapter) {
    out.println();
    out.println(
        String.format(
            Locale.ROOT,
            "%-70s %11s %11s %11s %11s  %11s %11s %11s %11s  %11s",
            "module", "A mean", "A std", "A min", "A max", "B mean", "B std", "B min", "B max", "‖s·B·A‖"));
    Map<ModuleKey, Double> norms = new TreeMap<>();
    for (LoraModule module : adapter.modules().values()) {
      if (module.adapterKind() != dev.loramerge.AdapterKind.REPLACEMENT) {
        norms.put(module.key(), UpdateNorms.norm(module));
      }
    }
    double[] sorted = norms.values().stream().mapToDouble(Double::doubleValue).sorted().toArray();
    double median = sorted.length == 0 ? 0 : sorted[sorted.length / 2];
    int cancelled = 0;
    for (LoraModule module : adapter.modules().values()) {
      if (!norms.containsKey(module.key())) {
        // A replacement has no update to measure: its tensor takes the base weight's place.
        out.println(String.format(Locale.ROOT, "%-70s %-51s  %-51s  %11s", module.key(), module.kindName(), module.parts().keySet(), "-"));
        continue;
      }
      double norm = norms.get(module.key());
      boolean isCancelled = norm <= CANCELLED * median;
      cancelled += isCancelled ? 1 : 0;
      if (!module.isPlainLora()) {
        out.println(
            String.format(
                Locale.ROOT, "%-70s %-51s  %-51s  %11.4e%s", module.key(), module.kindName(),
                module.parts().keySet(), norm, isCancelled ? "  cancelled" : ""));
        continue;
      }
      out.println(
          String.format(
              Locale.ROOT,
              "%-70s %s  %s  %11.4e%s",
              module.key(),
              moments(module.down().toDoubleArray()),
              moments(module.up().toDoubleArray()),
              norm,
              isCancelled ? "  cancelled" : ""));
    }
    out.println(
        String.format(
            Locale.ROOT,
            "%d modules, median ‖s·B·A‖ %.4e, %d cancelled (below %.0e of the median)",
            norms.size(),
            median,
            cancelled,
            CANCELLED));
  }

  private static void printModules(PrintWriter out, LoraFiles.AdapterFile file, Optional<Architecture> architecture) {
    int keyWidth = Math.max(6, file.adapter().modules().keySet().stream().mapToInt(key -> key.toString().length()).max().orElse(0));
    int nameWidth = Math.max(11, file.moduleNames().values().stream().mapToInt(String::length).max().orElse(0));
    String format = "%-" + keyWidth + "s  %-" + nameWidth + "s  %-16s %6s %10s %10s  %s";
    out.println();
    out.println(String.format(Locale.ROOT, format, "module", "in the file", "kind", "rank", "alpha", "scale", "block"));
    for (LoraModule module : file.adapter().modules().values()) {
      out.println(
          String.format(
              Locale.ROOT,
              format,
              module.key(),
              file.moduleNames().get(module.key()),
              module.kindName(),
              module.rank(),
              number(module.alpha()),
              number(module.scale()) + (module.scaleRule().name().equals("RSLORA") ? " (rsLoRA)" : ""),
              architecture.flatMap(arch -> arch.module(module.key()).flatMap(ModuleSpec::blockId)
                  .or(() -> arch.normScale(module.key()).flatMap(dev.loramerge.arch.NormScale::blockId))).orElse("-")));
    }
  }

  private static String moments(double[] values) {
    double sum = 0;
    double min = Double.POSITIVE_INFINITY;
    double max = Double.NEGATIVE_INFINITY;
    for (double value : values) {
      sum += value;
      min = Math.min(min, value);
      max = Math.max(max, value);
    }
    double mean = sum / values.length;
    double squares = 0;
    for (double value : values) {
      squares += (value - mean) * (value - mean);
    }
    return String.format(Locale.ROOT, "%11.4e %11.4e %11.4e %11.4e", mean, Math.sqrt(squares / values.length), min, max);
  }

  private static void row(PrintWriter out, String label, String value) {
    out.println(String.format(Locale.ROOT, "  %-14s%s", label, value));
  }

  /** "value ×count" for each distinct value, most common first. */
  private static String histogram(LoraAdapter adapter, Function<LoraModule, String> value) {
    Map<String, Long> counts =
        adapter.modules().values().stream().collect(Collectors.groupingBy(value, TreeMap::new, Collectors.counting()));
    return counts.entrySet().stream()
        .sorted(Map.Entry.<String, Long>comparingByValue().reversed())
        .map(entry -> entry.getKey() + " ×" + entry.getValue())
        .collect(Collectors.joining(", "));
  }

  /** Modules per LBW block, and the blocks of the architecture's LoRA set that have none. */
  private static String blocks(Architecture architecture, LoraAdapter adapter) {
    Map<String, Long> perBlock = new TreeMap<>();
    long unblocked = 0;
    for (LoraModule module : adapter.modules().values()) {
      Optional<String> block = architecture.module(module.key()).flatMap(ModuleSpec::blockId);
      if (block.isPresent()) {
        perBlock.merge(block.get(), 1L, Long::sum);
      } else {
        unblocked++;
      }
    }
    String covered =
        architecture.blockIds().stream()
            .filter(perBlock::containsKey)
            .map(id -> id + " ×" + perBlock.get(id))
            .collect(Collectors.joining(", "));
    String missing =
        architecture.loraBlockIds().stream().filter(id -> !perBlock.containsKey(id)).collect(Collectors.joining(", "));
    return String.format(
        Locale.ROOT,
        "%d of %d (%s)%s%s",
        perBlock.size(),
        architecture.blockIds().size(),
        covered,
        missing.isEmpty() ? "" : "; no modules in " + missing,
        unblocked == 0 ? "" : String.format(Locale.ROOT, "; %d modules outside any block (weight 1)", unblocked));
  }

  private static String size(Path path) throws IOException {
    long bytes;
    if (Files.isDirectory(path)) {
      try (Stream<Path> files = Files.list(path)) {
        bytes = files.filter(Files::isRegularFile).mapToLong(InspectCommand::fileSize).sum();
      }
    } else {
      bytes = Files.size(path);
    }
    return Sizes.bytes(bytes);
  }

  private static long fileSize(Path file) {
    try {
      return Files.size(file);
    } catch (IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }

  private static String parameters(LoraAdapter adapter) {
    long count = adapter.modules().values().stream()
        .mapToLong(m -> (m.adapterKind() == dev.loramerge.AdapterKind.LORA
                ? m.down().numel() + m.up().numel()
                : m.parts().values().stream().mapToLong(dev.loramerge.TensorData::numel).sum())
            + m.magnitude().map(magnitude -> magnitude.values().numel()).orElse(0L)
            + m.biasDiff().map(dev.loramerge.TensorData::numel).orElse(0L))
        .sum();
    return String.format(Locale.ROOT, "%,d", count);
  }

  private static String number(double value) {
    return value == Math.rint(value) && Math.abs(value) < 1e15
        ? Long.toString((long) value)
        : String.format(Locale.ROOT, "%.6g", value);
  }

  private static String abbreviate(String value) {
    String oneLine = value.replace('\n', ' ');
    return oneLine.length() <= METADATA_VALUE_WIDTH
        ? oneLine
        : oneLine.substring(0, METADATA_VALUE_WIDTH) + String.format(Locale.ROOT, "… (%d characters)", value.length());
  }
}

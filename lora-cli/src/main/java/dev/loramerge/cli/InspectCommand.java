package dev.loramerge.cli;

import dev.loramerge.Architecture;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleSpec;
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
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code lora inspect PATH}: what an adapter holds. */
@Command(
    name = "inspect",
    mixinStandardHelpOptions = true,
    description =
        "Show an adapter's format, architecture, modules, ranks, alphas, dtypes, size, metadata"
            + " and block coverage.")
final class InspectCommand implements Callable<Integer> {
  private static final int METADATA_VALUE_WIDTH = 100;

  @Spec CommandSpec spec;

  @Parameters(paramLabel = "PATH", description = "A PEFT folder or a kohya or diffusers .safetensors file.")
  Path path;

  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    LoraFormat format = LoraFiles.detect(path);
    LoraAdapter adapter = LoraFiles.read(path, inputOptions.readOptions());
    Optional<Architecture> architecture = Architecture.detect(adapter);
    PrintWriter out = spec.commandLine().getOut();
    out.println(path);
    row(out, "format", format.cliName());
    row(out, "architecture", architecture.map(Architecture::displayName).orElse("unknown (no SD1.5 or SDXL module set fits every module and shape)"));
    row(
        out,
        "modules",
        String.format(
            Locale.ROOT,
            "%d (%s)",
            adapter.size(),
            histogram(adapter, m -> m.key().component().prefix() + " " + m.kind().name().toLowerCase(Locale.ROOT))));
    row(out, "ranks", histogram(adapter, m -> Integer.toString(m.rank())));
    row(out, "alphas", histogram(adapter, m -> number(m.alpha())));
    row(out, "scales", histogram(adapter, m -> number(m.scale()) + (m.scaleRule().name().equals("RSLORA") ? " (rsLoRA)" : "")));
    row(out, "dtypes", histogram(adapter, m -> m.down().dtype().safetensorsName()));
    row(out, "size", size(path) + ", " + parameters(adapter) + " parameters");
    architecture.ifPresent(arch -> row(out, "blocks", blocks(arch, adapter)));
    if (adapter.metadata().isEmpty()) {
      row(out, "metadata", "(none)");
    } else {
      row(out, "metadata", adapter.metadata().size() + " entries");
      adapter.metadata().forEach((key, value) -> out.println("    " + key + " = " + abbreviate(value)));
    }
    out.flush();
    return LoraCommand.OK;
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
    long count = adapter.modules().values().stream().mapToLong(m -> m.down().numel() + m.up().numel()).sum();
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

package dev.loramerge.cli;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.Safetensors;
import dev.loramerge.synthetic.SyntheticLora;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.Writer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.function.Predicate;
import java.util.stream.Stream;
import picocli.CommandLine.Command;

/**
 * {@code lora cache-training} (hidden): the run the launcher records a Java 24+ AOT cache from.
 * It runs the commands users run most, {@code merge} and {@code fuse}, through the command line
 * itself (option parsing, the input digests, the readers and writers) on synthetic SDXL-shaped
 * files in a temporary folder, so that the cache holds the classes, call sites and method profiles
 * of a whole-model merge and a fuse. Recorded from {@code lora demo}, whose steps run in memory on
 * a few blocks, the cache left a merge command about 0.25 s slower.
 */
@Command(name = "cache-training", hidden = true, description = "Merge and fuse synthetic files (the launcher's cache training).")
final class CacheTrainingCommand implements Callable<Integer> {
  /** The blocks of the fused base: real SDXL shapes, a few MB. */
  private static final Set<String> BASE_BLOCKS = Set.of("IN04", "OUT05");

  @Override
  public Integer call() throws IOException {
    Path folder = Files.createTempDirectory("lora-cache-training-");
    try {
      return run(folder);
    } finally {
      try (Stream<Path> paths = Files.walk(folder)) {
        for (Path path : (Iterable<Path>) paths.sorted(Comparator.reverseOrder())::iterator) {
          Files.deleteIfExists(path);
        }
      }
    }
  }

  private static int run(Path folder) throws IOException {
    Architecture sdxl = Architecture.sdxl();
    Predicate<ModuleSpec> attention = spec -> spec.key().path().contains("attentions.");
    Path style = write(folder, adapter(sdxl, "style", attention, 1), "style.safetensors");
    Path subject = write(folder, adapter(sdxl, "subject", attention, 2), "subject.safetensors");
    Path detail = write(folder, adapter(sdxl, "detail", attention.and(CacheTrainingCommand::inBaseBlocks), 3), "detail.safetensors");
    Map<String, TensorData> weights = new LinkedHashMap<>();
    for (ModuleSpec spec : sdxl.modules().values()) {
      if (inBaseBlocks(spec)) {
        weights.put(spec.key().path() + ".weight", SyntheticLora.baseWeight(spec, DType.F16, 4));
      }
    }
    Path base = folder.resolve("base.safetensors");
    Safetensors.write(base, weights, Map.of());
    List<List<String>> commands =
        List.of(
            List.of("merge", "-o", folder.resolve("cat.safetensors").toString(), "--format", "kohya", style + "=0.7", subject + "=0.5"),
            List.of("merge", "-o", folder.resolve("linear.safetensors").toString(), "--algorithm", "linear", style + "=0.7", subject + "=0.5"),
            List.of("fuse", "--base", base.toString(), "-o", folder.resolve("fused.safetensors").toString(), detail + "=1"));
    for (List<String> command : commands) {
      StringWriter err = new StringWriter();
      int code = LoraCommand.execute(command.toArray(String[]::new), new PrintWriter(Writer.nullWriter()), new PrintWriter(err));
      if (code != LoraCommand.OK) {
        throw new IllegalStateException(String.join(" ", command) + " failed: " + err.toString().strip());
      }
    }
    return LoraCommand.OK;
  }

  private static LoraAdapter adapter(Architecture architecture, String name, Predicate<ModuleSpec> modules, long seed) {
    return SyntheticLora.builder(architecture).name(name).modules(modules).rank(4).alpha(4).dtype(DType.F16).seed(seed).build();
  }

  private static Path write(Path folder, LoraAdapter adapter, String name) throws IOException {
    Path file = folder.resolve(name);
    LoraFiles.write(adapter, file, LoraFormat.KOHYA);
    return file;
  }

  private static boolean inBaseBlocks(ModuleSpec spec) {
    return spec.blockId().map(BASE_BLOCKS::contains).orElse(false);
  }
}

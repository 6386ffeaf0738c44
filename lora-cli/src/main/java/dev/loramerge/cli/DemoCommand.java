package dev.loramerge.cli;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.algorithms.Svd;
import dev.loramerge.algorithms.Ties;
import dev.loramerge.analysis.UpdateNorms;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsWeights;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.synthetic.SyntheticLora;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code lora demo}: writes small SDXL-shaped adapters into a temporary folder and runs the
 * library's main jobs on them, printing what it did and how long each step took.
 */
@Command(
    name = "demo",
    mixinStandardHelpOptions = true,
    description =
        "Write small SDXL-shaped adapters into a temporary folder, convert them between formats"
            + " (checking that every update survives exactly), merge them with three methods, and"
            + " fuse them into an fp16 base file and restore it.")
final class DemoCommand implements Callable<Integer> {
  /** The 640-wide SDXL blocks: real shapes, small enough to run in a second. */
  private static final Set<String> BLOCKS = Set.of("IN04", "IN05", "OUT05");

  @Spec CommandSpec spec;

  @Option(names = "--keep", description = "Keep the temporary folder and print its path.")
  boolean keep;

  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    PrintWriter out = spec.commandLine().getOut();
    // SIGINT and SIGTERM skip the finally below; the JVM runs this hook instead. It is in place
    // before the folder exists, so that no signal falls between the two.
    AtomicReference<Path> created = new AtomicReference<>();
    Thread cleanup = new Thread(() -> deleteQuietly(created.get()), "lora-demo-cleanup");
    if (!keep) {
      Runtime.getRuntime().addShutdownHook(cleanup);
    }
    Path folder;
    try {
      folder = Files.createTempDirectory("lora-demo-");
    } catch (IOException e) {
      removeHook(cleanup);
      throw e;
    }
    created.set(folder);
    try {
      run(out, folder);
    } finally {
      if (keep) {
        out.println("kept " + folder);
      } else {
        removeHook(cleanup);
        deleteRecursively(folder);
      }
    }
    out.flush();
    return LoraCommand.OK;
  }

  private void run(PrintWriter out, Path folder) throws IOException {
    Architecture sdxl = Architecture.sdxl();
    long start = System.nanoTime();
    LoraAdapter style = adapter(sdxl, "style", 8, 16, 1);
    LoraAdapter subject = adapter(sdxl, "subject", 4, 4, 2);
    step(out, start, "generated", describe(style) + " and " + describe(subject));

    start = System.nanoTime();
    Path styleFile = folder.resolve("style.safetensors");
    Path subjectFolder = folder.resolve("subject");
    LoraFiles.write(style, styleFile, LoraFormat.KOHYA);
    LoraFiles.write(subject, subjectFolder, LoraFormat.PEFT);
    step(out, start, "wrote", styleFile.getFileName() + " (kohya) and " + subjectFolder.getFileName() + "/ (peft)");

    start = System.nanoTime();
    LoraAdapter styleRead = LoraFiles.read(styleFile);
    LoraAdapter subjectRead = LoraFiles.read(subjectFolder);
    step(
        out,
        start,
        "read",
        String.format(
            Locale.ROOT,
            "%s as %s, %s as %s",
            styleFile.getFileName(),
            Architecture.detect(styleRead).map(Architecture::displayName).orElse("unknown"),
            subjectFolder.getFileName(),
            Architecture.detect(subjectRead).map(Architecture::displayName).orElse("unknown")));

    start = System.nanoTime();
    Path peft = folder.resolve("style-peft");
    Path diffusers = folder.resolve("style-diffusers.safetensors");
    Path kohya = folder.resolve("style-kohya.safetensors");
    LoraFiles.write(styleRead, peft, LoraFormat.PEFT);
    LoraFiles.write(LoraFiles.read(peft), diffusers, LoraFormat.DIFFUSERS);
    LoraFiles.write(LoraFiles.read(diffusers), kohya, LoraFormat.KOHYA);
    LoraAdapter roundTrip = LoraFiles.read(kohya);
    double worst = largestDifference(style, roundTrip);
    step(
        out,
        start,
        "converted",
        String.format(
            Locale.ROOT,
            "kohya → peft → diffusers → kohya; largest change of any update element: %s",
            worst == 0 ? "0 (exact)" : Double.toString(worst)));
    if (worst != 0) {
      throw new IllegalStateException("conversion changed an update by " + worst);
    }

    merge(out, folder, styleRead, subjectRead, MergeAlgorithm.cat(), "cat (exact weighted sum)");
    merge(out, folder, styleRead, subjectRead, Svd.of(), "svd (factored, exact truncation to rank 8)");
    merge(out, folder, styleRead, subjectRead, Ties.of(0.5).onUpdates(), "ties_svd (density 0.5, re-ranked to 8)");
    fuse(out, folder, sdxl, styleRead, subjectRead);
  }

  /**
   * Writes an fp16 base for the demo blocks, fuses 0.7·style + 0.5·subject into it file to file,
   * and restores it from the original, checking that the restore is byte for byte the base.
   */
  private static void fuse(PrintWriter out, Path folder, Architecture sdxl, LoraAdapter style, LoraAdapter subject)
      throws IOException {
    long start = System.nanoTime();
    Map<String, TensorData> weights = new LinkedHashMap<>();
    for (ModuleSpec spec : sdxl.modules().values()) {
      if (isInDemoBlocks(spec)) {
        weights.put(spec.key().path() + ".weight", SyntheticLora.baseWeight(spec, DType.F16, 3));
      }
    }
    Path base = folder.resolve("unet-base.safetensors");
    Safetensors.write(base, weights, Map.of());
    step(out, start, "wrote", String.format(Locale.ROOT, "%s (%d fp16 weights, %s)", base.getFileName(), weights.size(), Sizes.bytes(Files.size(base))));

    start = System.nanoTime();
    Path fused = folder.resolve("unet-fused.safetensors");
    LoraFuser merger = LoraFuser.of(LoraMerger.builder().add(style, 0.7).add(subject, 0.5).build());
    FusedLora result = merger.fuseInto(SafetensorsWeights.of(base, fused));
    step(
        out,
        start,
        "fused",
        String.format(
            Locale.ROOT,
            "0.7·style + 0.5·subject into %s: %d weights, each the exact sum rounded once to fp16",
            fused.getFileName(),
            result.report().matched().size()));

    start = System.nanoTime();
    Path restored = folder.resolve("unet-restored.safetensors");
    merger.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    boolean identical = java.util.Arrays.equals(Files.readAllBytes(restored), Files.readAllBytes(base));
    step(out, start, "unfused", restored.getFileName() + (identical ? ": byte for byte the base" : ": DIFFERS from the base"));
    if (!identical) {
      throw new IllegalStateException("unfusing did not restore the base");
    }
  }

  /** Merges style 0.7 + subject 0.5 with {@code method}, writes it, and reports how close it is to the exact sum. */
  private static void merge(
      PrintWriter out, Path folder, LoraAdapter style, LoraAdapter subject, MergeAlgorithm method, String label)
      throws IOException {
    long start = System.nanoTime();
    LoraAdapter merged = LoraMerger.builder().add(style, 0.7).add(subject, 0.5).algorithm(method).merge();
    Path file = folder.resolve("merged-" + method.name() + ".safetensors");
    LoraFiles.write(merged, file, LoraFormat.KOHYA);
    long merging = System.nanoTime() - start;
    double difference = 0;
    double norm = 0;
    for (LoraModule module : merged.modules().values()) {
      List<LoraModule> terms = List.of(style.modules().get(module.key()), subject.modules().get(module.key()));
      UpdateNorms.Distance distance = UpdateNorms.distance(module, terms, List.of(0.7, 0.5));
      difference += distance.difference() * distance.difference();
      norm += distance.reference() * distance.reference();
    }
    int rank = merged.modules().values().iterator().next().rank();
    step(
        out,
        start,
        "merged",
        String.format(
            Locale.ROOT,
            "%s: rank %d, %s, %.2e relative distance from 0.7·style + 0.5·subject (merge and write %s)",
            label,
            rank,
            Sizes.bytes(java.nio.file.Files.size(file)),
            Math.sqrt(difference / norm),
            Sizes.seconds(merging)));
  }

  private static LoraAdapter adapter(Architecture architecture, String name, int rank, double alpha, long seed) {
    return SyntheticLora.builder(architecture)
        .name(name)
        .modules(DemoCommand::isInDemoBlocks)
        .rank(rank)
        .alpha(alpha)
        .dtype(DType.F16)
        .seed(seed)
        .build();
  }

  private static String describe(LoraAdapter adapter) {
    LoraModule first = adapter.modules().values().iterator().next();
    return String.format(
        Locale.ROOT,
        "'%s' (%d modules, rank %d, alpha %s, %s)",
        adapter.name(),
        adapter.size(),
        first.rank(),
        first.alpha(),
        first.dtype().safetensorsName());
  }

  private static double largestDifference(LoraAdapter expected, LoraAdapter actual) {
    if (!expected.modules().keySet().equals(actual.modules().keySet())) {
      throw new IllegalStateException("conversion changed the set of modules");
    }
    double worst = 0;
    for (LoraModule module : expected.modules().values()) {
      double[] want = module.deltaF64();
      double[] got = actual.modules().get(module.key()).deltaF64();
      for (int i = 0; i < want.length; i++) {
        worst = Math.max(worst, Math.abs(want[i] - got[i]));
      }
    }
    return worst;
  }

  private static void step(PrintWriter out, long startNanos, String what, String detail) {
    out.println(String.format(Locale.ROOT, "%-10s %8s  %s", what, Sizes.seconds(System.nanoTime() - startNanos), detail));
    out.flush();
  }

  /**
   * Deletes the folder, if it was made, while the JVM exits; lora-io's own hook deletes the
   * temporary files in it meanwhile, and the demo's thread may still be writing, either of which
   * can fail a pass, so several are made.
   */
  private static void deleteQuietly(Path folder) {
    for (int attempt = 0; folder != null && attempt < 20 && Files.exists(folder); attempt++) {
      try {
        deleteRecursively(folder);
      } catch (IOException | UncheckedIOException e) {
        // Tried again; after that the system cleans its temporary folder.
      }
    }
  }

  private static void removeHook(Thread cleanup) {
    try {
      Runtime.getRuntime().removeShutdownHook(cleanup);
    } catch (IllegalStateException e) {
      // The JVM is already exiting, and the hook has the folder to delete.
    }
  }

  private static void deleteRecursively(Path folder) throws IOException {
    try (Stream<Path> paths = Files.walk(folder)) {
      for (Path path : (Iterable<Path>) paths.sorted(Comparator.reverseOrder())::iterator) {
        Files.delete(path);
      }
    }
  }

  private static boolean isInDemoBlocks(ModuleSpec spec) {
    return spec.blockId().map(BLOCKS::contains).orElse(false);
  }
}

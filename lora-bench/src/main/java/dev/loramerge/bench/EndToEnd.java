package dev.loramerge.bench;

import dev.loramerge.Architecture;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMerger;
import dev.loramerge.MergeAlgorithm;
import dev.loramerge.ModuleSpec;
import dev.loramerge.SyntheticLora;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethods;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.OptionalDouble;
import java.util.Set;

/**
 * The end-to-end merge workload of the benchmarks issue: two SDXL-shaped rank-32 LoRAs over the
 * usual attention targets (722 UNet modules; alphas 32 and 16), weights 0.7 / 0.5, density 0.5,
 * target rank 32, every method timed in one JVM after a warm-up.
 *
 * <p>{@code java -cp … dev.loramerge.bench.EndToEnd [--rank R] [--runs N] [--methods a,b] [--json FILE]}
 */
public final class EndToEnd {
  /** The modules a kohya attention LoRA trains: everything inside the transformers. */
  private static final Set<String> ATTENTION_LEAVES =
      Set.of("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out");

  private EndToEnd() {}

  /** Whether a kohya SDXL attention LoRA targets {@code spec}. */
  static boolean isAttentionTarget(ModuleSpec spec) {
    String path = spec.key().path();
    return spec.key().component() == Component.UNET
        && path.contains("attentions.")
        && ATTENTION_LEAVES.stream().anyMatch(leaf -> path.endsWith("." + leaf));
  }

  /** Runs the workload and prints a table. */
  public static void main(String[] args) throws IOException {
    int rank = 32;
    int runs = 3;
    List<String> methods = new ArrayList<>(MergeMethods.NAMES.subList(0, 11));
    Path json = null;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--rank":
          rank = Integer.parseInt(args[++i]);
          break;
        case "--runs":
          runs = Integer.parseInt(args[++i]);
          break;
        case "--methods":
          methods = Arrays.asList(args[++i].split(","));
          break;
        case "--json":
          json = Path.of(args[++i]);
          break;
        default:
          throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    long start = System.nanoTime();
    LoraAdapter style =
        SyntheticLora.builder(Architecture.sdxl()).modules(EndToEnd::isAttentionTarget).rank(rank).alpha(32)
            .dtype(DType.F16).seed(1).name("style").build();
    LoraAdapter subject =
        SyntheticLora.builder(Architecture.sdxl()).modules(EndToEnd::isAttentionTarget).rank(rank).alpha(16)
            .dtype(DType.F16).seed(2).name("subject").build();
    System.out.printf(Locale.ROOT, "generated 2 × %d modules, rank %d, in %.1f s%n", style.size(), rank, (System.nanoTime() - start) / 1e9);
    System.out.printf(Locale.ROOT, "%-22s %9s %9s %9s %5s %12s%n", "operation", "median_s", "min_s", "max_s", "runs", "peak_rss_mb");
    StringBuilder results = new StringBuilder("[");
    for (String method : methods) {
      MergeAlgorithm algorithm = MergeMethods.named(method, OptionalDouble.of(0.5), MajoritySign.TOTAL, 0);
      LoraMerger merger = LoraMerger.builder().add(style, 0.7).add(subject, 0.5).algorithm(algorithm).rank(rank).build();
      merger.merge();
      double[] seconds = new double[runs];
      for (int run = 0; run < runs; run++) {
        long t0 = System.nanoTime();
        merger.merge();
        seconds[run] = (System.nanoTime() - t0) / 1e9;
      }
      Arrays.sort(seconds);
      double median = seconds[runs / 2];
      long rss = peakRssMb();
      System.out.printf(Locale.ROOT, "%-22s %9.3f %9.3f %9.3f %5d %12d%n", "merge/" + method, median, seconds[0], seconds[runs - 1], runs, rss);
      if (results.length() > 1) {
        results.append(',');
      }
      results.append(
          String.format(
              Locale.ROOT,
              "{\"name\":\"merge/%s\",\"median_s\":%.4f,\"min_s\":%.4f,\"max_s\":%.4f,\"runs\":%d,\"peak_rss_mb\":%d}",
              method, median, seconds[0], seconds[runs - 1], runs, rss));
    }
    if (json != null) {
      Files.writeString(json, results.append("]\n").toString(), StandardCharsets.UTF_8);
    }
  }

  /** The process's peak resident set (VmHWM), in MiB; 0 where /proc is not there. */
  static long peakRssMb() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (line.startsWith("VmHWM:")) {
          return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024;
        }
      }
    } catch (IOException e) {
      return 0;
    }
    return 0;
  }
}

package dev.loramerge.cli;

import com.google.common.base.Throwables;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethod;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.BlockWeights;
import dev.loramerge.io.LoraReadOptions;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.MergeListener;
import dev.loramerge.merge.PostPrune;
import dev.loramerge.merge.RankRule;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalDouble;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.FutureTask;
import java.util.stream.Collectors;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** The options of {@code lora merge} that {@code fuse} and {@code unfuse} share: inputs and method. */
final class MergeOptions {
  @Spec(Spec.Target.MIXEE) CommandSpec command;

  @Option(names = "--algorithm", paramLabel = "NAME", defaultValue = "cat", completionCandidates = MethodNames.class,
      description = "Merge method: ${COMPLETION-CANDIDATES} (default: ${DEFAULT-VALUE}).")
  String algorithm;

  @Option(names = "--density", paramLabel = "D", description = "Fraction of entries kept, for ties*, dare_*, magnitude_prune*, breadcrumbs and della.")
  Double density;

  @Option(names = "--majority-sign", paramLabel = "total|frequency", defaultValue = "total",
      description = "TIES sign election (default: ${DEFAULT-VALUE}).")
  String majoritySign;

  @Option(names = "--svd-rank", paramLabel = "R", description = "Target rank of re-ranked results (default: the largest input rank).")
  Integer svdRank;

  @Option(names = "--svd-clamp", paramLabel = "Q", description = "Clip re-ranked factors at this quantile of their entries (PEFT's svd_clamp).")
  Double svdClamp;

  @Option(names = "--seed", paramLabel = "S", defaultValue = "0", description = "Seed of the DARE and DELLA masks (default: ${DEFAULT-VALUE}).")
  long seed;

  @Option(names = "--blocks", paramLabel = "ADAPTER_INDEX:W,W,...|PRESET",
      description = "Block weights for one input (0 is the first INPUT): 17/26 values for SD1.5, 12/20 for SDXL,"
          + " or a preset (NONE, ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, ALL0.5). Repeatable.")
  List<String> blocks = new ArrayList<>();

  @Option(names = "--dynamic-method", paramLabel = "sv_ratio|sv_fro|sv_cumulative",
      description = "Choose each re-ranked module's rank from its singular values, as kohya's resize_lora (capped at --svd-rank).")
  String dynamicMethod;

  @Option(names = "--dynamic-param", paramLabel = "P", description = "The ratio or fraction of --dynamic-method.")
  Double dynamicParam;

  @Option(names = "--prune-threshold", paramLabel = "T", description = "After merging, zero factor entries with |x| < T.")
  Double pruneThreshold;

  @Option(names = "--prune-density", paramLabel = "D", description = "After merging, keep the D fraction of largest factor entries.")
  Double pruneDensity;

  @Option(names = "--exact-svd", description = "Re-rank dense updates by an exact SVD instead of the randomized one.")
  boolean exactSvd;

  @Parameters(paramLabel = "INPUT=WEIGHT", arity = "1..*", converter = WeightedInput.Converter.class,
      description = "A PEFT folder or a kohya, diffusers, xlabs, comfyui or bfl .safetensors file, and its weight (default 1).")
  List<WeightedInput> inputs;

  /**
   * The merge method the options name.
   *
   * @throws ParameterException for an unknown method, a missing or out-of-range density, or an
   *     unknown sign election
   */
  MergeAlgorithm method() {
    MajoritySign sign =
        MajoritySign.fromPeftName(majoritySign)
            .orElseThrow(() -> Usage.invalid(command, "--majority-sign", "'" + majoritySign + "' is not total or frequency"));
    MergeMethod method = Usage.check(command, "--algorithm", () -> MergeMethod.parse(algorithm));
    if (density == null && method.needsDensity()) {
      throw Usage.error(command, "--algorithm " + algorithm + " needs --density (the fraction of entries kept, in (0, 1])");
    }
    OptionalDouble given = density == null ? OptionalDouble.empty() : OptionalDouble.of(density);
    return Usage.check(command, "--density", () -> method.create(given, sign, seed));
  }

  /**
   * A merger with the method and every option's setting, then every input read and added with its
   * weight and block weights, and the input files' names, digests and weights in the recipe. The
   * options are checked before any input is read.
   *
   * @throws ParameterException for an option the library rejects, or options that conflict
   */
  LoraMerger.Builder merger(LoraReadOptions readOptions, MergeListener listener) throws IOException {
    LoraMerger.Builder merger = LoraMerger.builder().algorithm(method()).exactSvd(exactSvd).listener(listener);
    if (svdRank != null) {
      Usage.check(command, "--svd-rank", () -> merger.rank(svdRank));
    }
    if (dynamicMethod != null) {
      if (dynamicParam == null) {
        throw Usage.error(command, "--dynamic-method " + dynamicMethod + " needs --dynamic-param");
      }
      RankRule.Method known =
          Usage.check(command, "--dynamic-method", () -> RankRule.named(dynamicMethod, 1).method());
      merger.rankRule(Usage.check(command, "--dynamic-param", () -> RankRule.named(known.name(), dynamicParam)));
    }
    if (pruneThreshold != null && pruneDensity != null) {
      throw Usage.error(command, "give --prune-threshold or --prune-density, not both");
    }
    if (pruneThreshold != null) {
      merger.prune(Usage.check(command, "--prune-threshold", () -> PostPrune.threshold(pruneThreshold)));
    }
    if (pruneDensity != null) {
      merger.prune(Usage.check(command, "--prune-density", () -> PostPrune.density(pruneDensity)));
    }
    if (svdClamp != null) {
      Usage.check(command, "--svd-clamp", () -> merger.svdClamp(svdClamp));
    }
    Map<Integer, String> blocksByInput = blocksByInput();
    List<Object> files = new ArrayList<>();
    // The digests are read while the inputs' headers are parsed, each file on a thread of its own:
    // hashing them one after the other took a quarter of a merge command's time.
    List<FutureTask<String>> digests = new ArrayList<>();
    DigestCache cache = DigestCache.fromEnvironment(System.getenv());
    for (WeightedInput input : inputs) {
      FutureTask<String> digest = new FutureTask<>(() -> sha256(cache, input.path()));
      Thread thread = new Thread(digest, "lora-sha256");
      thread.setDaemon(true);
      thread.start();
      digests.add(digest);
    }
    for (int i = 0; i < inputs.size(); i++) {
      WeightedInput input = inputs.get(i);
      LoraAdapter adapter = InputOptions.read(command, input.path(), readOptions).adapter();
      if (blocksByInput.containsKey(i)) {
        String spec = blocksByInput.get(i);
        BlockWeights weights =
            Usage.check(command, "--blocks", () -> BlockWeights.parse(architecture(adapter, readOptions), spec));
        merger.add(adapter, input.weight(), weights);
      } else {
        merger.add(adapter, input.weight());
      }
      Map<String, Object> file = new LinkedHashMap<>();
      file.put("path", input.path().getFileName().toString());
      file.put("sha256", digest(digests.get(i)));
      file.put("weight", input.weight());
      files.add(file);
    }
    merger.recipe("input_files", files);
    return merger;
  }

  /** The paths of the input adapters. */
  List<Path> inputPaths() {
    return inputs.stream().map(WeightedInput::path).collect(Collectors.toList());
  }

  private Map<Integer, String> blocksByInput() {
    Map<Integer, String> byInput = new LinkedHashMap<>();
    for (String spec : blocks) {
      int colon = spec.indexOf(':');
      String index = colon < 0 ? "" : spec.substring(0, colon);
      int parsed;
      try {
        parsed = Integer.parseInt(index);
      } catch (NumberFormatException e) {
        throw Usage.invalid(command, "--blocks", "'" + spec + "' must start with an input index and ':', e.g. 0:OUTALL");
      }
      if (parsed < 0 || parsed >= inputs.size()) {
        throw Usage.invalid(
            command,
            "--blocks",
            String.format(Locale.ROOT, "'%s' names input %d, but there are %d inputs (0 to %d)", spec, parsed, inputs.size(), inputs.size() - 1));
      }
      if (byInput.put(parsed, spec.substring(colon + 1)) != null) {
        throw Usage.error(command, "--blocks given twice for input " + parsed);
      }
    }
    return byInput;
  }

  /**
   * The architecture whose blocks {@code adapter}'s block weights name.
   *
   * @throws LoraMergeException if {@code adapter} fits no known architecture and none was given
   */
  private static Architecture architecture(LoraAdapter adapter, LoraReadOptions readOptions) {
    return readOptions
        .architecture()
        .or(() -> Architecture.detect(adapter))
        .orElseThrow(
            () ->
                new LoraMergeException(
                    "block weights need an SD1.5 or SDXL adapter, and '" + adapter.name()
                        + "' fits neither; pass --architecture"));
  }

  /** The digest {@code task} computed, its IOException rethrown as it was. */
  private static String digest(FutureTask<String> task) throws IOException {
    try {
      return task.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new InterruptedIOException("interrupted while hashing the inputs");
    } catch (ExecutionException e) {
      Throwables.throwIfInstanceOf(e.getCause(), IOException.class);
      Throwables.throwIfUnchecked(e.getCause());
      throw new IllegalStateException(e.getCause());
    }
  }

  /** The SHA-256 of an input file (of the weights file, for a folder), in hex. */
  static String sha256(DigestCache cache, Path input) throws IOException {
    return cache.sha256(Files.isDirectory(input) ? weightsIn(input) : input);
  }

  private static Path weightsIn(Path folder) {
    Path peft = folder.resolve("adapter_model.safetensors");
    return Files.exists(peft) ? peft : folder.resolve("pytorch_lora_weights.safetensors");
  }

  /** The methods' names, in the registry's order, for {@code --algorithm}'s help. */
  static final class MethodNames implements Iterable<String> {
    @Override
    public Iterator<String> iterator() {
      return MergeMethod.names().iterator();
    }
  }
}

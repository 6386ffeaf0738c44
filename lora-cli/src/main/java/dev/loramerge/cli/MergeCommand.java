package dev.loramerge.cli;

import dev.loramerge.Architecture;
import dev.loramerge.BlockWeights;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMerger;
import dev.loramerge.MergeAlgorithm;
import dev.loramerge.PostPrune;
import dev.loramerge.RankRule;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethods;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.LoraReadOptions;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.DigestInputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalDouble;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code lora merge -o OUT [--format …] [--algorithm NAME] [--density D] [--majority-sign …]
 * [--svd-rank R] [--svd-clamp Q] [--seed S] [--dtype …] INPUT=WEIGHT...}.
 */
@Command(
    name = "merge",
    mixinStandardHelpOptions = true,
    description = {
      "Merge adapters into one. Without --algorithm the result is the exact weighted sum (cat).",
      "NAME is one of PEFT's combination types (cat, linear, svd, ties, ties_svd, dare_linear,"
          + " dare_ties, dare_linear_svd, dare_ties_svd, magnitude_prune, magnitude_prune_svd),"
          + " add_difference (A + (B − C), scaled by the weights), breadcrumbs or della."
    })
final class MergeCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Option(names = {"-o", "--output"}, required = true, paramLabel = "OUT",
      description = "Output file (a folder for peft). An existing folder gets a file named {inputs}_{method}_{weights}.safetensors.")
  Path output;

  @Option(names = "--format", paramLabel = "peft|kohya|diffusers", converter = FormatConverter.class,
      description = "Output format (default: the first input's).")
  LoraFormat format;

  @Option(names = "--algorithm", paramLabel = "NAME", defaultValue = "cat", description = "Merge method (default: ${DEFAULT-VALUE}).")
  String algorithm;

  @Option(names = "--density", paramLabel = "D", description = "Fraction of entries kept, for ties, dare_* and magnitude_prune*.")
  Double density;

  @Option(names = "--majority-sign", paramLabel = "total|frequency", defaultValue = "total",
      description = "TIES sign election (default: ${DEFAULT-VALUE}).")
  String majoritySign;

  @Option(names = "--svd-rank", paramLabel = "R", description = "Target rank of re-ranked results (default: the largest input rank).")
  Integer svdRank;

  @Option(names = "--svd-clamp", paramLabel = "Q", description = "Clip re-ranked factors at this quantile of their entries (PEFT's svd_clamp).")
  Double svdClamp;

  @Option(names = "--seed", paramLabel = "S", defaultValue = "0", description = "Seed of the DARE masks (default: ${DEFAULT-VALUE}).")
  long seed;

  @Option(names = "--dtype", paramLabel = "fp32|fp16|bf16", description = "Element type of the merged factors (default: the inputs').")
  String dtype;

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
      description = "A PEFT folder or a kohya or diffusers .safetensors file, and its weight (default 1).")
  List<WeightedInput> inputs;

  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    PrintWriter out = spec.commandLine().getOut();
    MajoritySign sign =
        MajoritySign.fromPeftName(majoritySign)
            .orElseThrow(() -> new IllegalArgumentException("--majority-sign must be total or frequency, got '" + majoritySign + "'"));
    MergeAlgorithm method =
        MergeMethods.named(algorithm, density == null ? OptionalDouble.empty() : OptionalDouble.of(density), sign, seed);
    LoraReadOptions readOptions = inputOptions.readOptions();
    long start = System.nanoTime();
    LoraMerger.Builder merger =
        LoraMerger.builder().algorithm(method).exactSvd(exactSvd).listener(ProgressBar.forTerminal("merging"));
    List<Object> files = new ArrayList<>();
    Map<Integer, String> blocksByInput = blocksByInput();
    for (int i = 0; i < inputs.size(); i++) {
      WeightedInput input = inputs.get(i);
      LoraAdapter adapter = LoraFiles.read(input.path(), readOptions);
      if (blocksByInput.containsKey(i)) {
        merger.add(adapter, input.weight(), blockWeights(adapter, blocksByInput.get(i), readOptions));
      } else {
        merger.add(adapter, input.weight());
      }
      Map<String, Object> file = new LinkedHashMap<>();
      file.put("path", input.path().getFileName().toString());
      file.put("sha256", sha256(input.path()));
      file.put("weight", input.weight());
      files.add(file);
    }
    merger.recipe("input_files", files);
    if (svdRank != null) {
      merger.rank(svdRank);
    }
    if (dynamicMethod != null) {
      if (dynamicParam == null) {
        throw new IllegalArgumentException("--dynamic-method " + dynamicMethod + " needs --dynamic-param");
      }
      merger.rankRule(RankRule.named(dynamicMethod, dynamicParam));
    }
    if (pruneThreshold != null && pruneDensity != null) {
      throw new IllegalArgumentException("give --prune-threshold or --prune-density, not both");
    }
    if (pruneThreshold != null) {
      merger.prune(PostPrune.threshold(pruneThreshold));
    }
    if (pruneDensity != null) {
      merger.prune(PostPrune.density(pruneDensity));
    }
    if (svdClamp != null) {
      merger.svdClamp(svdClamp);
    }
    if (dtype != null) {
      merger.dtype(
          DType.fromUserName(dtype)
              .orElseThrow(() -> new IllegalArgumentException("--dtype must be fp32, fp16 or bf16, got '" + dtype + "'")));
    }
    LoraFormat outputFormat = format != null ? format : LoraFiles.detect(inputs.get(0).path());
    Path target = target(outputFormat, method);
    merger.name(LoraFiles.adapterName(target));
    LoraAdapter merged = merger.merge();
    LoraFiles.write(merged, target, outputFormat);
    out.println(
        String.format(
            Locale.ROOT,
            "merged %d adapters with %s into %s (%s, %d modules) in %s",
            inputs.size(),
            method,
            target,
            outputFormat.cliName(),
            merged.size(),
            Sizes.seconds(System.nanoTime() - start)));
    out.flush();
    return LoraCommand.OK;
  }

  /**
   * {@code -o} itself, or inside an existing folder a file (or, for peft, a folder) with the
   * guides' {inputs}_{method}_{weights} name. For peft an empty folder or an adapter folder is
   * the target itself.
   */
  private Path target(LoraFormat outputFormat, MergeAlgorithm method) throws IOException {
    if (!Files.isDirectory(output)) {
      return output;
    }
    if (outputFormat == LoraFormat.PEFT) {
      boolean empty;
      try (java.util.stream.Stream<Path> children = Files.list(output)) {
        empty = children.findAny().isEmpty();
      }
      if (empty || Files.exists(output.resolve("adapter_config.json"))) {
        return output;
      }
    }
    String names = inputs.stream().map(input -> LoraFiles.adapterName(input.path())).collect(Collectors.joining("+"));
    String weights = inputs.stream().map(WeightedInput::weightText).collect(Collectors.joining("+"));
    String name = names + "_" + method.name() + "_" + weights;
    return output.resolve(outputFormat == LoraFormat.PEFT ? name : name + ".safetensors");
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
        throw new IllegalArgumentException("--blocks '" + spec + "' must start with an input index and ':', e.g. 0:OUTALL");
      }
      if (parsed < 0 || parsed >= inputs.size()) {
        throw new IllegalArgumentException(
            String.format(Locale.ROOT, "--blocks '%s' names input %d, but there are %d inputs (0 to %d)", spec, parsed, inputs.size(), inputs.size() - 1));
      }
      if (byInput.put(parsed, spec.substring(colon + 1)) != null) {
        throw new IllegalArgumentException("--blocks given twice for input " + parsed);
      }
    }
    return byInput;
  }

  private static BlockWeights blockWeights(LoraAdapter adapter, String spec, LoraReadOptions readOptions) {
    Architecture architecture =
        readOptions
            .architecture()
            .or(() -> Architecture.detect(adapter))
            .orElseThrow(
                () ->
                    new IllegalArgumentException(
                        "block weights need an SD1.5 or SDXL adapter, and '" + adapter.name()
                            + "' fits neither; pass --architecture"));
    return BlockWeights.parse(architecture, spec);
  }

  private static String sha256(Path input) throws IOException {
    Path file = Files.isDirectory(input) ? weightsIn(input) : input;
    MessageDigest digest;
    try {
      digest = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every Java platform has SHA-256", e);
    }
    try (InputStream in = new DigestInputStream(Files.newInputStream(file), digest)) {
      in.transferTo(java.io.OutputStream.nullOutputStream());
    }
    return HexFormat.of().formatHex(digest.digest());
  }

  private static Path weightsIn(Path folder) {
    Path peft = folder.resolve("adapter_model.safetensors");
    return Files.exists(peft) ? peft : folder.resolve("pytorch_lora_weights.safetensors");
  }
}

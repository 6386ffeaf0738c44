package dev.loramerge.cli;

import dev.loramerge.DType;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.fuse.FuseReport;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.io.LoraReadOptions;
import dev.loramerge.io.SafetensorsWeights;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code lora fuse --base BASE.safetensors -o OUT.safetensors [--scale S] [--algorithm NAME …merge
 * options] [--dtype keep|fp32|fp16|bf16|fp8|fp8_e5m2] [--allow-missing] [--dora-blend] INPUT=WEIGHT...}.
 */
@Command(
    name = "fuse",
    mixinStandardHelpOptions = true,
    description = {
      "Fuse adapters into a base model file: W' = W + scale·ΔW, computed in float64 and rounded once"
          + " to each weight's dtype. ΔW is the exact weighted sum of the inputs, or the update of"
          + " --algorithm (the options are those of `lora merge`).",
      "The output keeps the base's tensor order and metadata (plus the recipe) and copies untouched"
          + " tensors byte for byte; it appears only when complete."
    })
final class FuseCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Option(names = {"-o", "--output"}, required = true, paramLabel = "OUT.safetensors", description = "The fused model file.")
  Path output;

  @Option(names = "--scale", paramLabel = "S", defaultValue = "1", description = "Multiplies the update (diffusers' lora_scale; default: ${DEFAULT-VALUE}).")
  double scale;

  @Option(names = "--dtype", paramLabel = "keep|fp32|fp16|bf16|fp8|fp8_e5m2", defaultValue = "keep",
      description = "Element type of the output's floating-point tensors (default: ${DEFAULT-VALUE}, the base's); fp8 is"
          + " float8 e4m3fn (F8_E4M3), fp8_e5m2 float8 e5m2 (F8_E5M2).")
  String dtype;

  @Option(names = "--allow-missing", description = "Skip modules that have no weight in the base instead of failing.")
  boolean allowMissing;

  @Option(
      names = "--dora-blend",
      description =
          "Weight a DoRA module as ComfyUI does, W + w·(DoRA(W) − W) with DoRA at weight 1, instead of"
              + " PEFT's m/‖W + w·ΔW‖·(W + w·ΔW); recorded in the output's recipe.")
  boolean doraBlend;

  @Mixin MergeOptions mergeOptions;
  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    Path base = requireBase(spec, inputOptions);
    DType outputType =
        dtype.equals("keep")
            ? null
            : DType.fromUserName(dtype)
                .orElseThrow(() -> Usage.invalid(spec, "--dtype", "'" + dtype + "' is not keep, fp32, fp16, bf16, fp8 (fp8_e4m3) or fp8_e5m2"));
    Outputs.checkNotAnInput(spec, output, inputs(base, mergeOptions));
    long start = System.nanoTime();
    LoraFuser merger = fuser(spec, mergeOptions, inputOptions, "fusing", scale, allowMissing, doraBlend, base);
    SafetensorsWeights target = SafetensorsWeights.of(base, output);
    if (outputType != null) {
      target = target.withDType(outputType);
    }
    FusedLora fused = merger.fuseInto(target);
    // A fuse that changes a tensor's shape says so, apart from the result on stdout.
    PrintWriter err = spec.commandLine().getErr();
    for (FuseReport.Widened widened : fused.report().widened()) {
      err.println(
          String.format(
              Locale.ROOT,
              "widened %s (%s) from %d to %d input features for the control image, as diffusers does",
              widened.weight(), widened.module(), widened.fromFeatures(), widened.toFeatures()));
    }
    err.flush();
    report(spec.commandLine().getOut(), fused, "fused", output, start);
    return LoraCommand.OK;
  }

  /** {@code --base}, which fuse and unfuse need. */
  static Path requireBase(CommandSpec spec, InputOptions inputOptions) {
    if (inputOptions.base == null) {
      throw new CommandLine.ParameterException(spec.commandLine(), "Missing required option: '--base=BASE.safetensors'");
    }
    return inputOptions.base;
  }

  /** Every file a fuse or unfuse reads: the model and the adapters. */
  static List<Path> inputs(Path model, MergeOptions mergeOptions) {
    List<Path> inputs = new ArrayList<>(mergeOptions.inputPaths());
    inputs.add(model);
    return inputs;
  }

  /** The fuser of fuse and unfuse: the inputs and method, the scale, and the base in the recipe. */
  static LoraFuser fuser(
      CommandSpec spec,
      MergeOptions mergeOptions,
      InputOptions inputOptions,
      String label,
      double scale,
      boolean allowMissing,
      boolean doraBlend,
      Path base)
      throws IOException {
    LoraReadOptions readOptions = inputOptions.readOptions();
    LoraMerger.Builder merger = mergeOptions.merger(readOptions, ProgressBar.forTerminal(label));
    LoraFuser.Builder fuser = LoraFuser.builder();
    Usage.check(spec, "--scale", () -> fuser.scale(scale));
    readOptions.architecture().ifPresent(fuser::architecture);
    return fuser
        .merger(merger.recipe("base_file", baseFile(base)).build())
        .allowUnmatched(allowMissing)
        .doraWeighting(doraBlend ? DoraMagnitude.Weighting.BLEND : DoraMagnitude.Weighting.INSIDE_NORM)
        .build();
  }

  private static Map<String, Object> baseFile(Path base) throws IOException {
    Map<String, Object> file = new LinkedHashMap<>();
    file.put("path", base.getFileName().toString());
    file.put("bytes", Files.size(base));
    return file;
  }

  static void report(PrintWriter out, FusedLora fused, String verb, Path output, long start) {
    out.println(
        String.format(
            Locale.ROOT,
            "%s %d modules into %s in %s",
            verb,
            fused.report().matched().size(),
            output,
            Sizes.seconds(System.nanoTime() - start)));
    if (!fused.report().unmatched().isEmpty()) {
      out.println(
          String.format(
              Locale.ROOT,
              "skipped %d modules with no weight in the base, e.g. %s",
              fused.report().unmatched().size(),
              fused.report().unmatched().get(0)));
    }
    out.flush();
  }
}

package dev.loramerge.cli;

import dev.loramerge.AdapterKind;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.BaseWeightNames;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.LoraReadOptions;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
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
      description = "Output format (default: the first input's; kohya for an xlabs, comfyui or bfl input).")
  LoraFormat format;

  @Option(names = "--dtype", paramLabel = "fp32|fp16|bf16", description = "Element type of the merged factors (default: the inputs').")
  String dtype;

  @Mixin MergeOptions mergeOptions;
  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    PrintWriter out = spec.commandLine().getOut();
    LoraReadOptions readOptions = inputOptions.readOptions();
    long start = System.nanoTime();
    MergeAlgorithm method = mergeOptions.method();
    DType outputType =
        dtype == null
            ? null
            : DType.fromUserName(dtype).orElseThrow(() -> Usage.invalid(spec, "--dtype", "'" + dtype + "' is not fp32, fp16 or bf16"));
    if (outputType == DType.F8_E4M3 || outputType == DType.F8_E5M2) {
      // A merge writes LoRA factors (full differences too, re-ranked), never a dense tensor.
      throw Usage.invalid(
          spec, "--dtype", "'" + dtype + "': a merge writes LoRA factors, which lose too much in float8; merge in fp16 or"
              + " bf16 and give `lora fuse` --dtype " + dtype);
    }
    LoraFormat outputFormat = format != null ? format : LoraFiles.detect(mergeOptions.inputs.get(0).path());
    boolean readOnlyInput = !outputFormat.writable();
    if (readOnlyInput) {
      // XLabs, ComfyUI and BFL files are read only; kohya holds every kind they hold but a
      // replacement (below).
      outputFormat = LoraFormat.KOHYA;
    }
    Path target = target(outputFormat, method);
    Outputs.checkNotAnInput(spec, target, mergeOptions.inputPaths());
    LoraMerger.Builder merger = mergeOptions.merger(readOptions, ProgressBar.forTerminal("merging"));
    if (outputType != null) {
      merger.dtype(outputType);
    }
    merger.name(LoraFiles.adapterName(target));
    LoraAdapter merged;
    if (inputOptions.base != null) {
      // The base's weights turn DoRA modules into LoRA (DoRA(W) − W); they are mapped, and read
      // one module at a time.
      try (SafetensorsFile base = SafetensorsFile.open(inputOptions.base)) {
        java.util.Set<String> names = base.tensors().stream().map(TensorSpec::name).collect(Collectors.toSet());
        java.util.Optional<Architecture> architecture =
            readOptions.architecture().or(() -> Architecture.detect(merger.build().inputs().get(0).adapter()));
        merged = merger.baseWeights(key -> BaseWeightNames.resolve(key, architecture, names).map(base::tensor)).merge();
      }
    } else {
      merged = merger.merge();
    }
    if (readOnlyInput && merged.modules().values().stream().anyMatch(m -> m.adapterKind() == AdapterKind.REPLACEMENT)) {
      // A control LoRA's norm replacements: diffusers is the one layout that holds them.
      outputFormat = LoraFormat.DIFFUSERS;
    }
    LoraFiles.write(merged, target, outputFormat);
    out.println(
        String.format(
            Locale.ROOT,
            "merged %d adapters with %s into %s (%s, %d modules) in %s",
            mergeOptions.inputs.size(),
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
    String names = mergeOptions.inputs.stream().map(input -> LoraFiles.adapterName(input.path())).collect(Collectors.joining("+"));
    String weights = mergeOptions.inputs.stream().map(WeightedInput::weightText).collect(Collectors.joining("+"));
    String name = names + "_" + method.name() + "_" + weights;
    return output.resolve(outputFormat == LoraFormat.PEFT ? name : name + ".safetensors");
  }
}

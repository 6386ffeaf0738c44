package dev.loramerge.cli;

import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.io.SafetensorsWeights;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code lora unfuse --base FUSED.safetensors -o OUT.safetensors [--original BASE.safetensors]
 * [--dora-blend] INPUT=WEIGHT...}.
 */
@Command(
    name = "unfuse",
    mixinStandardHelpOptions = true,
    description = {
      "Take fused adapters back out of a model file. With --original, the tensors the inputs"
          + " change are checked against the original fused with the inputs and restored from it"
          + " byte for byte (the output is the original file when nothing else changed);"
          + " without it the update is subtracted, W = W' − scale·ΔW, as PEFT unmerges, which in"
          + " fp16 need not give back the original bits.",
      "Give the inputs, weights, --scale and merge options the fuse used."
    })
final class UnfuseCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Option(names = {"-o", "--output"}, required = true, paramLabel = "OUT.safetensors", description = "The restored model file.")
  Path output;

  @Option(names = "--original", paramLabel = "BASE.safetensors", description = "The base the fuse started from, for an exact restore.")
  Path original;

  @Option(names = "--scale", paramLabel = "S", defaultValue = "1", description = "The scale the fuse used (default: ${DEFAULT-VALUE}).")
  double scale;

  @Option(names = "--allow-missing", description = "Skip modules that have no weight in the model instead of failing.")
  boolean allowMissing;

  @Option(
      names = "--dora-blend",
      description =
          "The fuse weighted DoRA modules as ComfyUI does, W + w·(DoRA(W) − W) with DoRA at weight 1, instead of"
              + " PEFT's m/‖W + w·ΔW‖·(W + w·ΔW); as the fuse did.")
  boolean doraBlend;

  @Mixin MergeOptions mergeOptions;
  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws IOException {
    Path fused = FuseCommand.requireBase(spec, inputOptions);
    List<Path> inputs = FuseCommand.inputs(fused, mergeOptions);
    if (original != null) {
      inputs.add(original);
    }
    Outputs.checkNotAnInput(spec, output, inputs);
    long start = System.nanoTime();
    LoraFuser merger = FuseCommand.fuser(spec, mergeOptions, inputOptions, "unfusing", scale, allowMissing, doraBlend, fused);
    FusedLora result =
        original != null
            ? merger.fuseInto(SafetensorsWeights.restoring(fused, original, output))
            : merger.unfuseFrom(SafetensorsWeights.of(fused, output));
    FuseCommand.report(
        spec.commandLine().getOut(),
        result,
        original != null ? "restored from " + original.getFileName() : "subtracted",
        output,
        start);
    return LoraCommand.OK;
  }
}

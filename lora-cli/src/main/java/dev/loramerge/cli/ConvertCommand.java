package dev.loramerge.cli;

import dev.loramerge.LoraAdapter;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

/** {@code lora convert --to peft|kohya|diffusers [--base BASE] -o OUT INPUT}. */
@Command(
    name = "convert",
    mixinStandardHelpOptions = true,
    description = {
      "Convert an adapter between PEFT, kohya and diffusers form; every module's update s·B·A is"
          + " kept exactly.",
      "OUT is a folder for peft, a .safetensors file otherwise."
    })
final class ConvertCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Option(
      names = "--to",
      required = true,
      paramLabel = "peft|kohya|diffusers",
      converter = FormatConverter.class,
      description = "Output format.")
  LoraFormat format;

  @Option(names = {"-o", "--output"}, required = true, paramLabel = "OUT", description = "Output folder (peft) or file.")
  Path output;

  @Parameters(paramLabel = "INPUT", description = "A PEFT folder or a kohya, diffusers, xlabs, comfyui or bfl .safetensors file.")
  Path input;

  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  @Override
  public Integer call() throws Exception {
    Outputs.checkNotAnInput(spec, output, List.of(input));
    // The names a kohya file is written in follow the architecture: a hint passed over is said.
    LoraFiles.AdapterFile file = InputOptions.read(spec, input, inputOptions.readOptions());
    LoraAdapter adapter = file.adapter();
    LoraFiles.write(adapter, output, format);
    spec.commandLine()
        .getOut()
        .println(
            String.format(
                Locale.ROOT,
                "wrote %s (%s, %d modules) from %s (%s)",
                output,
                format.cliName(),
                adapter.size(),
                input,
                file.format().cliName()));
    return LoraCommand.OK;
  }
}

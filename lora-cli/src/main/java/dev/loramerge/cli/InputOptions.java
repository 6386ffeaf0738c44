package dev.loramerge.cli;

import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraReadOptions;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Path;
import java.util.stream.Collectors;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** How input adapters are read: name resolution and what to do with unreadable tensors. */
final class InputOptions {
  @Spec(Spec.Target.MIXEE) CommandSpec command;

  @Option(
      names = "--base",
      paramLabel = "BASE.safetensors",
      description = "Base weights whose keys resolve kohya module names.")
  Path base;

  @Option(
      names = "--architecture",
      paramLabel = "ID",
      description = "Resolve kohya module names against this architecture, and take the adapter for it where its modules"
          + " fit it (before the file's metadata and names): sd15, sd2, sdxl, sd35-medium, sd35-large or flux.")
  String architecture;

  @Option(
      names = "--skip-unsupported",
      description = "Drop tensors of no adapter kind this tool reads (OFT, unknown keys) with a warning.")
  boolean skipUnsupported;

  /**
   * The adapter file at {@code path}, read with {@code options}; a hint of its architecture that
   * the shapes did not fit is said on {@code spec}'s error stream, one line each.
   */
  static LoraFiles.AdapterFile read(CommandSpec spec, Path path, LoraReadOptions options) throws IOException {
    LoraFiles.AdapterFile file = LoraFiles.readFile(path, options);
    file.architecture().warnings().forEach(warning -> spec.commandLine().getErr().println("lora: warning: " + path + ": " + warning));
    return file;
  }

  LoraReadOptions readOptions() throws IOException {
    LoraReadOptions.Builder options = LoraReadOptions.builder().skipUnsupported(skipUnsupported);
    if (architecture != null) {
      options.architecture(
          Architecture.byId(architecture)
              .orElseThrow(
                  () ->
                      Usage.invalid(
                          command,
                          "--architecture",
                          "unknown architecture '"
                              + architecture
                              + "', expected one of "
                              + Architecture.all().stream().map(Architecture::id).collect(Collectors.joining(", ")))));
    }
    if (base != null) {
      try (SafetensorsFile file = SafetensorsFile.open(base)) {
        options.baseKeys(file.tensors().stream().map(TensorSpec::name).collect(Collectors.toList()));
      }
    }
    return options.build();
  }
}

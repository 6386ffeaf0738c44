package dev.loramerge.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import picocli.CommandLine.Model.CommandSpec;

/** The one contract every command keeps with its inputs: it never writes over one. */
final class Outputs {
  private Outputs() {}

  /**
   * Refuses {@code output} if it is one of {@code inputs} (the same file or folder, by any path or
   * link) or a folder that holds one (a PEFT adapter written over its own weights file).
   *
   * @throws picocli.CommandLine.ParameterException naming {@code -o} and the input
   */
  static void checkNotAnInput(CommandSpec command, Path output, List<Path> inputs) throws IOException {
    Path written = real(output);
    for (Path input : inputs) {
      if (real(input).startsWith(written)) {
        throw Usage.invalid(
            command, "--output", output + " is the input " + input + "; inputs are never modified");
      }
    }
  }

  /**
   * The path with every link resolved, as far as it exists: a path that does not exist yet is
   * its existing parent's real path and its name.
   */
  private static Path real(Path path) throws IOException {
    Path absolute = path.toAbsolutePath().normalize();
    if (Files.exists(absolute)) {
      return absolute.toRealPath();
    }
    Path parent = absolute.getParent();
    return parent == null ? absolute : real(parent).resolve(absolute.getFileName());
  }
}

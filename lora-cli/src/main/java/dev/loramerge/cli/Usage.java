package dev.loramerge.cli;

import java.util.function.Supplier;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.ParameterException;

/**
 * Usage errors found after parsing: the library checks a setting's value and words its message
 * after the setting; the command reports it as picocli reports a value it cannot convert, naming
 * the flag, so that it exits 2 with the same two lines.
 */
final class Usage {
  private Usage() {}

  /** {@code value}'s result, or a usage error naming {@code flag} if the library rejects it. */
  static <T> T check(CommandSpec command, String flag, Supplier<T> value) {
    try {
      return value.get();
    } catch (IllegalArgumentException e) {
      throw invalid(command, flag, e.getMessage());
    }
  }

  /** A usage error: {@code flag} has a value that is wrong for {@code reason}. */
  static ParameterException invalid(CommandSpec command, String flag, String reason) {
    return error(command, "Invalid value for option '" + flag + "': " + reason);
  }

  /** A usage error that no single flag's value explains, e.g. two flags that conflict. */
  static ParameterException error(CommandSpec command, String message) {
    return new ParameterException(command.commandLine(), message);
  }
}

package dev.loramerge.cli;

import picocli.CommandLine.Option;
import picocli.CommandLine.ParseResult;

/** {@code --verbose}: stack traces for failures, debug detail for progress. */
final class VerboseOption {
  @Option(names = "--verbose", description = "Print stack traces and more detail.")
  boolean verbose;

  /** Whether {@code --verbose} was given to the command that ran. */
  static boolean isVerbose(ParseResult parseResult) {
    ParseResult last = parseResult;
    while (last.hasSubcommand()) {
      last = last.subcommand();
    }
    return last.hasMatchedOption("--verbose") || parseResult.hasMatchedOption("--verbose");
  }
}

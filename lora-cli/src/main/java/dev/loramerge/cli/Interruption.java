package dev.loramerge.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;
import picocli.CommandLine.ParseResult;

/**
 * What the command says when SIGINT or SIGTERM ends it: one line naming the output it did not
 * write. The JVM runs shutdown hooks on those signals and then exits with 130 or 143; the
 * library's own hook deletes the temporary files meanwhile.
 */
final class Interruption {
  private final PrintWriter err;
  private final AtomicBoolean interrupted = new AtomicBoolean();
  private volatile ParseResult parsed;
  private volatile boolean finished;

  private Interruption(PrintWriter err) {
    this.err = err;
  }

  /** An interruption that reports on {@code err} once the JVM starts shutting down. */
  static Interruption install(PrintWriter err) {
    Interruption interruption = new Interruption(err);
    Runtime.getRuntime().addShutdownHook(new Thread(interruption::report, "lora-interrupted"));
    return interruption;
  }

  /** An interruption for a command run inside another program, whose exit is not the command's. */
  static Interruption none() {
    return new Interruption(null);
  }

  /** Records the command line, whose {@code -o} is what an interruption did not write. */
  void parsed(ParseResult parseResult) {
    parsed = parseResult;
  }

  /** Whether the JVM is shutting down under the command: its failures are then only echoes. */
  boolean interrupted() {
    return interrupted.get();
  }

  /** Marks the command as done: the shutdown that follows is its own exit. */
  void finished() {
    finished = true;
  }

  private void report() {
    if (finished || !interrupted.compareAndSet(false, true)) {
      return;
    }
    Path output = output();
    err.println(output == null ? "lora: interrupted" : "lora: interrupted; " + output + " was not written");
    err.flush();
  }

  private Path output() {
    ParseResult last = parsed;
    if (last == null) {
      return null;
    }
    while (last.hasSubcommand()) {
      last = last.subcommand();
    }
    return last.hasMatchedOption("--output") ? last.matchedOptionValue("--output", null) : null;
  }
}

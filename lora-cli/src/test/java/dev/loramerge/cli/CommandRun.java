package dev.loramerge.cli;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.List;

/**
 * Runs {@link LoraCommand} in process with its stdout and stderr captured; each run's output is
 * appended to the earlier runs' unless the fixture clears it.
 */
final class CommandRun {
  private final StringWriter out = new StringWriter();
  private final StringWriter err = new StringWriter();
  private final boolean clearsBeforeEachRun;

  CommandRun() {
    this(false);
  }

  private CommandRun(boolean clearsBeforeEachRun) {
    this.clearsBeforeEachRun = clearsBeforeEachRun;
  }

  /** A fixture whose {@link #out()} and {@link #err()} hold only the latest run's output. */
  static CommandRun clearingBeforeEachRun() {
    return new CommandRun(true);
  }

  /** Runs {@code lora} with {@code args} and returns its exit code. */
  int run(String... args) {
    if (clearsBeforeEachRun) {
      clearOut();
      err.getBuffer().setLength(0);
    }
    return LoraCommand.execute(args, new PrintWriter(out, true), new PrintWriter(err, true));
  }

  int run(List<String> args) {
    return run(args.toArray(String[]::new));
  }

  void clearOut() {
    out.getBuffer().setLength(0);
  }

  String out() {
    return out.toString();
  }

  String err() {
    return err.toString();
  }
}

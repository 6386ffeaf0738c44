package dev.loramerge.cli;

import dev.loramerge.LoraMergeException;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.NoSuchFileException;
import java.util.Locale;
import java.util.Map;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

/**
 * The {@code lora} command: inspect, convert, merge, compare, fuse and unfuse LoRA adapters, and
 * a demo of them.
 *
 * <p>Exit codes: 0 success, 2 usage error (picocli's {@link CommandLine.ParameterException}, also
 * for a value the library rejects), 3 bad input (a one-line message on stderr; the stack trace only
 * with {@code --verbose}); 130 or 143 when SIGINT or SIGTERM stops it, with one line saying what
 * was not written.
 */
@Command(
    name = "lora",
    mixinStandardHelpOptions = true,
    versionProvider = LoraCommand.Version.class,
    description = "Merge LoRA adapters for diffusion models and fuse them into base weights.",
    subcommands = {
      InspectCommand.class,
      ConvertCommand.class,
      MergeCommand.class,
      FuseCommand.class,
      UnfuseCommand.class,
      CompareCommand.class,
      DemoCommand.class,
      CacheTrainingCommand.class,
      CommandLine.HelpCommand.class
    })
public final class LoraCommand implements Runnable {
  /** Success. */
  static final int OK = 0;
  /** The command line was wrong. */
  static final int USAGE = 2;
  /** An input could not be used. */
  static final int BAD_INPUT = 3;

  /**
   * The library's messages name its settings, the command's user knows its flags: each setting a
   * message can suggest, and the flag that sets it.
   */
  private static final Map<String, String> FLAGS =
      Map.of(
          "allowUnmatched(true)", "--allow-missing",
          "skipUnsupported(true)", "--skip-unsupported",
          "the model's weight names (baseKeys)", "--base with the model's weights");

  @Spec CommandSpec spec;

  @Override
  public void run() {
    throw new CommandLine.ParameterException(spec.commandLine(), "a command is required");
  }

  /** Runs the command line and exits with its code. */
  public static void main(String[] args) {
    PrintWriter err = new PrintWriter(System.err, true);
    Interruption interruption = Interruption.install(err);
    int code = execute(args, new PrintWriter(System.out, true), err, interruption);
    interruption.finished();
    System.exit(code);
  }

  /** Runs the command line with the given streams and returns its exit code. */
  static int execute(String[] args, PrintWriter out, PrintWriter err) {
    return execute(args, out, err, Interruption.none());
  }

  private static int execute(String[] args, PrintWriter out, PrintWriter err, Interruption interruption) {
    CommandLine commandLine = new CommandLine(new LoraCommand());
    commandLine.setOut(out);
    commandLine.setErr(err);
    commandLine.setParameterExceptionHandler(
        (exception, arguments) -> {
          CommandLine failed = exception.getCommandLine();
          failed.getErr().println("lora: " + exception.getMessage());
          failed
              .getErr()
              .println("Try '" + failed.getCommandSpec().qualifiedName() + " --help' for more information.");
          return USAGE;
        });
    commandLine.setExecutionStrategy(
        parseResult -> {
          interruption.parsed(parseResult);
          return new CommandLine.RunLast().execute(parseResult);
        });
    commandLine.setExecutionExceptionHandler(
        (exception, failed, parseResult) -> {
          if (interruption.interrupted()) {
            // The shutdown deleted what the command was writing; its failure says nothing new.
            return 1;
          }
          boolean verbose = VerboseOption.isVerbose(parseResult);
          failed.getErr().println("lora: " + withFlags(describe(exception)));
          if (verbose) {
            exception.printStackTrace(failed.getErr());
          }
          return isBadInput(exception) ? BAD_INPUT : 1;
        });
    return commandLine.execute(args);
  }

  private static boolean isBadInput(Exception exception) {
    return exception instanceof IOException
        || exception instanceof UncheckedIOException
        || exception instanceof LoraMergeException
        || exception instanceof IllegalArgumentException;
  }

  private static String describe(Exception exception) {
    if (exception instanceof NoSuchFileException) {
      return ((NoSuchFileException) exception).getFile() + ": no such file or folder";
    }
    if (exception instanceof UncheckedIOException && exception.getCause() != null) {
      return describe(exception.getCause());
    }
    String message = exception.getMessage();
    if (message == null || message.isBlank()) {
      return exception.getClass().getSimpleName();
    }
    return message.lines().findFirst().orElse(message);
  }

  private static String withFlags(String message) {
    String translated = message;
    for (Map.Entry<String, String> setting : FLAGS.entrySet()) {
      translated = translated.replace(setting.getKey(), setting.getValue());
    }
    return translated;
  }

  private static String describe(Throwable cause) {
    return cause instanceof Exception ? describe((Exception) cause) : String.valueOf(cause.getMessage());
  }

  /** The version from the jar's manifest. */
  static final class Version implements CommandLine.IVersionProvider {
    @Override
    public String[] getVersion() {
      String version = LoraCommand.class.getPackage().getImplementationVersion();
      return new String[] {
        String.format(Locale.ROOT, "lora %s", version == null ? "(development build)" : version)
      };
    }
  }
}

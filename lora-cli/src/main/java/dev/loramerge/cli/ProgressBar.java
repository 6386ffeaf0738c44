package dev.loramerge.cli;

import dev.loramerge.MergeListener;
import dev.loramerge.ModuleKey;
import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line progress bar on stderr, redrawn at most ten times a second, shown only when stderr
 * is a terminal (so logs and pipes stay clean).
 */
final class ProgressBar implements MergeListener {
  private static final long REDRAW_NANOS = 100_000_000L;
  private static final int WIDTH = 30;

  private final PrintStream err;
  private final String label;
  private long lastDraw;

  private ProgressBar(PrintStream err, String label) {
    this.err = err;
    this.label = label;
  }

  /** A bar when a terminal is attached, otherwise a listener that does nothing. */
  static MergeListener forTerminal(String label) {
    return System.console() == null ? MergeListener.NONE : new ProgressBar(System.err, label);
  }

  @Override
  public synchronized void moduleMerged(int done, int total, ModuleKey key) {
    long now = System.nanoTime();
    if (done < total && now - lastDraw < REDRAW_NANOS) {
      return;
    }
    lastDraw = now;
    int filled = total == 0 ? WIDTH : (int) ((long) done * WIDTH / total);
    err.print(
        String.format(
            Locale.ROOT,
            "\r%s [%s%s] %d/%d modules",
            label,
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            done,
            total));
    if (done == total) {
      err.print("\r" + " ".repeat(label.length() + WIDTH + 30) + "\r");
    }
    err.flush();
  }
}

package dev.loramerge.cli;

import dev.loramerge.ModuleKey;
import dev.loramerge.merge.MergeListener;
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
    draw(done, total, String.format(Locale.ROOT, "%d/%d modules", done, total));
  }

  @Override
  public synchronized void weightsWritten(long done, long total) {
    draw(done, total, String.format(Locale.ROOT, "%s / %s", Sizes.bytes(done), Sizes.bytes(total)));
  }

  private void draw(long done, long total, String count) {
    long now = System.nanoTime();
    if (done < total && now - lastDraw < REDRAW_NANOS) {
      return;
    }
    lastDraw = now;
    int filled = total == 0 ? WIDTH : (int) (done * WIDTH / total);
    err.print(String.format(Locale.ROOT, "\r%s [%s%s] %s", label, "#".repeat(filled), " ".repeat(WIDTH - filled), count));
    if (done == total) {
      err.print("\r" + " ".repeat(label.length() + WIDTH + 40) + "\r");
    }
    err.flush();
  }
}

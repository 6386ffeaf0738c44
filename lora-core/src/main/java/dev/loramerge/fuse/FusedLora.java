package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkState;

import java.util.Optional;

/**
 * A fuse that has happened: what it matched, and, for in-memory targets, the way back.
 *
 * <p>Thread-safe. {@link #unfuse()} works once: of two threads calling it at once, one restores the
 * weights and the other gets an {@link IllegalStateException}. An unfuse holds the target's lock as
 * a fuse does, so it never interleaves with other fuses and unfuses on the same target (see {@link
 * WeightTarget#of(java.util.Map)}).
 */
public final class FusedLora {
  private final FuseReport report;
  private final Optional<WeightTarget.Restorer> restorer;
  private boolean unfused;

  FusedLora(FuseReport report, Optional<WeightTarget.Restorer> restorer) {
    this.report = report;
    this.restorer = restorer;
  }

  /** Which modules were fused into which weights. */
  public FuseReport report() {
    return report;
  }

  /** Whether {@link #unfuse()} can restore the target (in-memory targets can; files cannot). */
  public boolean canUnfuse() {
    return restorer.isPresent();
  }

  /**
   * Restores every weight this fuse changed, bit for bit: to the original when no other fuse into
   * the same target is active, else to the original with the other active fuses re-applied. Fuses
   * can be undone in any order.
   *
   * @throws IllegalStateException if the target was a file (use {@code lora unfuse}, or fuse the
   *     original again) or this fuse is already undone, by this thread or another
   */
  public synchronized void unfuse() {
    checkState(restorer.isPresent(), "a fuse into a file wrote a new file; fuse the original again, or restore from it");
    checkState(!unfused, "this fuse is already undone");
    restorer.get().restore();
    unfused = true;
  }

  @Override
  public String toString() {
    return "FusedLora{" + report + (unfused ? ", unfused" : "") + "}";
  }
}

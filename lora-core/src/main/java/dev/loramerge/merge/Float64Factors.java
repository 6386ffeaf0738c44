package dev.loramerge.merge;

/**
 * One module's merged update in float64 with scale 1: B' (out×r) and A' (r×in·k·k), row-major.
 *
 * <p>The arrays are made for the caller by {@link ModuleUpdates#factors} and handed over without
 * copies (a module's factors run to tens of megabytes); the caller may change them.
 */
public final class Float64Factors {
  private final double[] up;
  private final double[] down;
  private final int rank;

  Float64Factors(double[] up, double[] down, int rank) {
    this.up = up;
    this.down = down;
    this.rank = rank;
  }

  /** B', out×{@link #rank()}, row-major; the caller's own array. */
  public double[] up() {
    return up;
  }

  /** A', {@link #rank()}×in·k·k, row-major; the caller's own array. */
  public double[] down() {
    return down;
  }

  /** The rank r. */
  public int rank() {
    return rank;
  }
}

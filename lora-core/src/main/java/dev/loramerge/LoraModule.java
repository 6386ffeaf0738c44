package dev.loramerge;

import static com.google.common.base.Preconditions.checkNotNull;

import java.util.Arrays;
import java.util.Locale;

/**
 * One module of a LoRA adapter: the factors A (down, r×in or r×in×k×k) and B (up, out×r or
 * out×r×1×1), alpha and the scale rule. Its update is ΔW = s·B·A with s = α/r (α/√r with
 * rsLoRA); for a convolution, A is flattened to r×(in·k·k) and ΔW reshaped to out×in×k×k.
 *
 * <p>Factors stay as {@link TensorData}, possibly memory-mapped, until a computation reads them.
 * Instances are immutable and thread-safe.
 */
public final class LoraModule {
  /**
   * The layer type a module adapts, which decides the rank of its factors and of the base weight;
   * {@link dev.loramerge.arch.ModuleSpec} uses it for the layers an architecture has.
   */
  public enum Kind {
    /** A {@code torch.nn.Linear}: A is r×in, B is out×r, the weight {@code [out, in]}. */
    LINEAR,
    /**
     * A {@code torch.nn.Conv2d}: A is r×in×kh×kw, B is out×r×1×1, the weight {@code [out, in, kh,
     * kw]}.
     */
    CONV
  }

  private final ModuleKey key;
  private final TensorData down;
  private final TensorData up;
  private final double alpha;
  private final ScaleRule scaleRule;

  private LoraModule(ModuleKey key, TensorData down, TensorData up, double alpha, ScaleRule scaleRule) {
    this.key = key;
    this.down = down;
    this.up = up;
    this.alpha = alpha;
    this.scaleRule = scaleRule;
  }

  /**
   * A module with factors {@code down} (A) and {@code up} (B).
   *
   * @throws LoraMergeException when the factor shapes do not form a LoRA pair, or alpha is not a
   *     finite number
   */
  public static LoraModule of(
      ModuleKey key, TensorData down, TensorData up, double alpha, ScaleRule scaleRule) {
    checkNotNull(key, "key");
    checkNotNull(down, "down");
    checkNotNull(up, "up");
    checkNotNull(scaleRule, "scaleRule");
    validate(key, down, up, alpha);
    return new LoraModule(key, down, up, alpha, scaleRule);
  }

  /** A module with the standard scale rule. */
  public static LoraModule of(ModuleKey key, TensorData down, TensorData up, double alpha) {
    return of(key, down, up, alpha, ScaleRule.STANDARD);
  }

  private static void validate(ModuleKey key, TensorData down, TensorData up, double alpha) {
    boolean linear = down.rank() == 2 && up.rank() == 2;
    boolean conv = down.rank() == 4 && up.rank() == 4 && up.dim(2) == 1 && up.dim(3) == 1;
    if (!linear && !conv) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s': down %s and up %s are neither linear ([r, in] and [out, r]) nor"
                  + " convolution ([r, in, k, k] and [out, r, 1, 1]) LoRA factors",
              key,
              Arrays.toString(down.shape()),
              Arrays.toString(up.shape())));
    }
    if (up.dim(1) != down.dim(0)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s': down %s has rank %d but up %s has rank %d",
              key,
              Arrays.toString(down.shape()),
              down.dim(0),
              Arrays.toString(up.shape()),
              up.dim(1)));
    }
    if (down.dim(0) == 0) {
      throw new LoraMergeException(String.format(Locale.ROOT, "module '%s' has rank 0", key));
    }
    if (!down.dtype().isFloatingPoint() || !up.dtype().isFloatingPoint()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s': factors are %s and %s, expected floating-point tensors",
              key,
              down.dtype().safetensorsName(),
              up.dtype().safetensorsName()));
    }
    if (!Double.isFinite(alpha)) {
      throw new LoraMergeException(
          String.format(Locale.ROOT, "module '%s': alpha is %s, expected a finite number", key, alpha));
    }
  }

  /** The module this adapts. */
  public ModuleKey key() {
    return key;
  }

  /** A, the down projection. */
  public TensorData down() {
    return down;
  }

  /** B, the up projection. */
  public TensorData up() {
    return up;
  }

  /** Alpha as stored (kohya's {@code .alpha}, PEFT's {@code lora_alpha}). */
  public double alpha() {
    return alpha;
  }

  /** How alpha and rank give the scale. */
  public ScaleRule scaleRule() {
    return scaleRule;
  }

  /** The rank r. */
  public int rank() {
    return Math.toIntExact(down.dim(0));
  }

  /** The scale s of the update s·B·A. */
  public double scale() {
    return scaleRule.scale(alpha, rank());
  }

  /** Linear or convolution. */
  public Kind kind() {
    return down.rank() == 4 ? Kind.CONV : Kind.LINEAR;
  }

  /** Input features (linear) or channels (convolution). */
  public long inFeatures() {
    return down.dim(1);
  }

  /** Output features (linear) or channels (convolution). */
  public long outFeatures() {
    return up.dim(0);
  }

  /** Kernel height and width (1 for linear layers). */
  public long kernelSize() {
    return kind() == Kind.CONV ? down.dim(2) : 1;
  }

  /** The shape of the base weight this updates: [out, in] or [out, in, kh, kw]. */
  public long[] weightShape() {
    return kind() == Kind.CONV
        ? new long[] {outFeatures(), inFeatures(), down.dim(2), down.dim(3)}
        : new long[] {outFeatures(), inFeatures()};
  }

  /** The element type of the factors (of A where they differ). */
  public DType dtype() {
    return down.dtype();
  }

  /** This module with another key. */
  public LoraModule withKey(ModuleKey newKey) {
    return of(newKey, down, up, alpha, scaleRule);
  }

  /**
   * The update s·B·A in float64, row-major in the base weight's layout. Meant for checks and
   * small modules: it allocates out·in·k·k doubles.
   */
  public double[] deltaF64() {
    int rank = rank();
    int out = Math.toIntExact(outFeatures());
    int inner = Math.toIntExact(down.numel() / rank);
    double[] a = down.toDoubleArray();
    double[] b = up.toDoubleArray();
    double s = scale();
    double[] delta = new double[Math.multiplyExact(out, inner)];
    for (int o = 0; o < out; o++) {
      for (int p = 0; p < rank; p++) {
        double factor = s * b[o * rank + p];
        if (factor == 0) {
          continue;
        }
        int rowA = p * inner;
        int rowD = o * inner;
        for (int i = 0; i < inner; i++) {
          delta[rowD + i] += factor * a[rowA + i];
        }
      }
    }
    return delta;
  }

  /** Equal when key, factors, alpha and scale rule are equal. */
  @Override
  public boolean equals(Object other) {
    if (!(other instanceof LoraModule)) {
      return false;
    }
    LoraModule that = (LoraModule) other;
    return key.equals(that.key)
        && down.equals(that.down)
        && up.equals(that.up)
        && Double.compare(alpha, that.alpha) == 0
        && scaleRule == that.scaleRule;
  }

  @Override
  public int hashCode() {
    return java.util.Objects.hash(key, down, up, alpha, scaleRule);
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "%s{rank=%d, alpha=%s, %s, down=%s, up=%s}",
        key,
        rank(),
        alpha,
        scaleRule,
        down,
        up);
  }
}

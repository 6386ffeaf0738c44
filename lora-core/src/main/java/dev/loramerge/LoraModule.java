package dev.loramerge;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableSortedMap;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * One module of a LoRA adapter: the factors A (down, r×in or r×in×k×k) and B (up, out×r or
 * out×r×1×1), alpha and the scale rule. Its update is ΔW = s·B·A with s = α/r (α/√r with
 * rsLoRA); for a convolution, A is flattened to r×(in·k·k) and ΔW reshaped to out×in×k×k.
 *
 * <p>A module may be of another {@link AdapterKind} (LoCon with a Tucker core, LoHa, LoKr, a full
 * difference), may carry a DoRA magnitude, which renormalises the updated weight, and a bias
 * difference. {@link #down()} and {@link #up()} exist where the kind has exact LoRA factors;
 * {@link #deltaF64()} is every kind's update, and {@link #fusedF64} every kind's fused weight.
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
  private final AdapterKind adapterKind;
  /** The kind's tensors under their LyCORIS names; empty for plain LoRA, whose are down and up. */
  private final ImmutableSortedMap<String, TensorData> parts;
  /** The base weight's shape where the factors do not give it (null for plain LoRA). */
  private final long[] shape;
  private final DoraMagnitude magnitude;
  private final TensorData biasDiff;

  private LoraModule(ModuleKey key, TensorData down, TensorData up, double alpha, ScaleRule scaleRule) {
    this(key, down, up, alpha, scaleRule, AdapterKind.LORA, ImmutableSortedMap.of(), null, null, null);
  }

  private LoraModule(
      ModuleKey key, TensorData down, TensorData up, double alpha, ScaleRule scaleRule, AdapterKind adapterKind,
      ImmutableSortedMap<String, TensorData> parts, long[] shape, DoraMagnitude magnitude, TensorData biasDiff) {
    this.key = key;
    this.down = down;
    this.up = up;
    this.alpha = alpha;
    this.scaleRule = scaleRule;
    this.adapterKind = adapterKind;
    this.parts = parts;
    this.shape = shape;
    this.magnitude = magnitude;
    this.biasDiff = biasDiff;
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

  /**
   * A module of {@code kind} from its tensors under their LyCORIS names ({@code lora_down},
   * {@code lora_up}, {@code lora_mid}; {@code hada_w1_a} … {@code hada_t2}; {@code lokr_w1} …
   * {@code lokr_t2}; {@code diff}), with the standard scale rule. {@code weightShape} is the base
   * weight's shape where the reader knows it (LyCORIS flattens LoHa and factored LoKr convolutions
   * to [out, in·kh·kw]); it must hold as many elements as the update, with the same first
   * dimension. Absent, the shape the tensors imply is used.
   *
   * @throws LoraMergeException when the tensors do not form an update of {@code kind}
   */
  public static LoraModule ofKind(
      ModuleKey key, AdapterKind kind, Map<String, TensorData> tensors, double alpha, Optional<long[]> weightShape) {
    checkNotNull(key, "key");
    checkNotNull(kind, "kind");
    ImmutableSortedMap<String, TensorData> parts = ImmutableSortedMap.copyOf(tensors);
    if (!parts.keySet().containsAll(KindMath.required(kind))) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s': a %s needs %s, found %s", key, kind.displayName(),
              new java.util.TreeSet<>(KindMath.required(kind)), parts.keySet()));
    }
    if (kind == AdapterKind.LORA) {
      return of(key, parts.get(KindMath.LORA_DOWN), parts.get(KindMath.LORA_UP), alpha);
    }
    for (Map.Entry<String, TensorData> part : parts.entrySet()) {
      if (!part.getValue().dtype().isFloatingPoint()) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s': %s is %s, expected a floating-point tensor", key, part.getKey(),
                part.getValue().dtype().safetensorsName()));
      }
    }
    if (!Double.isFinite(alpha)) {
      throw new LoraMergeException(String.format(Locale.ROOT, "module '%s': alpha is %s, expected a finite number", key, alpha));
    }
    long[] implied = KindMath.impliedShape(key, kind, parts);
    long[] shape = weightShape.map(long[]::clone).orElse(implied);
    if (shape.length == 0 || shape[0] != implied[0] || TensorData.numel(shape) != TensorData.numel(implied)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s': a %s updating %s cannot update a %s weight", key, kind.displayName(),
              Arrays.toString(implied), Arrays.toString(shape)));
    }
    if (kind == AdapterKind.LORA_TUCKER) {
      return new LoraModule(key, null, parts.get(KindMath.LORA_UP), alpha, ScaleRule.STANDARD, kind, parts, shape, null, null);
    }
    return new LoraModule(key, null, null, alpha, ScaleRule.STANDARD, kind, parts, shape, null, null);
  }

  /**
   * A {@link AdapterKind#REPLACEMENT} of module {@code key}: {@code weight} takes the base
   * weight's place, e.g. a Flux.1 control LoRA's {@code double_blocks.0.img_attn.norm.query_norm.scale}
   * [128] for {@code transformer_blocks.0.attn.norm_q}.
   *
   * @throws LoraMergeException when {@code weight} is not a floating-point tensor
   */
  public static LoraModule replacement(ModuleKey key, TensorData weight) {
    checkNotNull(weight, "weight");
    return ofKind(key, AdapterKind.REPLACEMENT, Map.of(KindMath.SET_WEIGHT, weight), 1, Optional.empty());
  }

  /**
   * The tensor that replaces the base weight, for a {@link AdapterKind#REPLACEMENT}.
   *
   * @throws LoraMergeException for the other kinds
   */
  public TensorData replacementWeight() {
    if (adapterKind != AdapterKind.REPLACEMENT) {
      throw new LoraMergeException(
          String.format(Locale.ROOT, "module '%s' is a %s, not a replacement", key, adapterKind.displayName()));
    }
    return parts.get(KindMath.SET_WEIGHT);
  }

  /**
   * This module with a DoRA magnitude: its fused weight becomes {@code m / ‖W + w·ΔW‖ · (W + w·ΔW)}.
   *
   * @throws LoraMergeException when the magnitude has neither one value per output row nor one
   *     per input channel
   */
  public LoraModule withMagnitude(DoraMagnitude magnitude) {
    checkNotNull(magnitude, "magnitude");
    long[] weight = weightShape();
    long inner = TensorData.numel(weight) / weight[0];
    boolean fits = magnitude.perOutput()
        ? magnitude.count() == weight[0]
        : magnitude.count() > 0 && inner % magnitude.count() == 0 && (weight.length < 4 || magnitude.count() == weight[1]);
    if (!fits) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s': DoRA magnitude %s does not fit a %s weight (expected one value per %s)", key,
              Arrays.toString(magnitude.values().shape()), Arrays.toString(weight),
              magnitude.perOutput() ? "output row" : "input channel"));
    }
    return new LoraModule(key, down, up, alpha, scaleRule, adapterKind, parts, shape, magnitude, biasDiff);
  }

  /**
   * This module with a bias difference ({@code diff_b}): a fuse adds it to the layer's bias.
   *
   * @throws LoraMergeException when it does not hold one value per output feature
   */
  public LoraModule withBiasDiff(TensorData biasDiff) {
    checkNotNull(biasDiff, "biasDiff");
    if (biasDiff.numel() != outFeatures() || !biasDiff.dtype().isFloatingPoint()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s': bias difference %s %s, expected %d floating-point values", key,
              biasDiff.dtype().safetensorsName(), Arrays.toString(biasDiff.shape()), outFeatures()));
    }
    return new LoraModule(key, down, up, alpha, scaleRule, adapterKind, parts, shape, magnitude, biasDiff);
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

  /**
   * A, the down projection; for a Tucker LoCon, the core contracted with {@code lora_down}, in
   * float64 [r, in, kh, kw], which makes s·B·A its exact update.
   *
   * @throws LoraMergeException when the kind has no LoRA factors (see {@link AdapterKind#factored()})
   */
  public TensorData down() {
    if (adapterKind == AdapterKind.LORA_TUCKER) {
      return KindMath.tuckerDown(parts);
    }
    return requireFactors(down);
  }

  /**
   * B, the up projection.
   *
   * @throws LoraMergeException when the kind has no LoRA factors (see {@link AdapterKind#factored()})
   */
  public TensorData up() {
    return requireFactors(up);
  }

  private TensorData requireFactors(TensorData factor) {
    if (factor == null) {
      throw new LoraMergeException(
          String.format(Locale.ROOT, "module '%s' is a %s: it has no LoRA factors", key, adapterKind.displayName()));
    }
    return factor;
  }

  /** How the update is built from the module's tensors. */
  public AdapterKind adapterKind() {
    return adapterKind;
  }

  /**
   * The kind's tensors under their LyCORIS names, as read; empty for plain LoRA, whose tensors
   * are {@link #down()} and {@link #up()}.
   */
  public ImmutableSortedMap<String, TensorData> parts() {
    return parts;
  }

  /** The DoRA magnitude, if the module has one. */
  public Optional<DoraMagnitude> magnitude() {
    return Optional.ofNullable(magnitude);
  }

  /** The bias difference ({@code diff_b}), if the module has one. */
  public Optional<TensorData> biasDiff() {
    return Optional.ofNullable(biasDiff);
  }

  /**
   * Whether the update is exactly s·B·A, adds to the weight, and leaves the bias alone: what the
   * factor-space merges and the LoRA layouts take.
   */
  public boolean isPlainLora() {
    return adapterKind.factored() && magnitude == null && biasDiff == null;
  }

  /**
   * The kind's name, with {@code +DoRA} and {@code +bias} for a magnitude and a bias difference,
   * e.g. {@code "LoHa+DoRA"}.
   */
  public String kindName() {
    return adapterKind.displayName() + (magnitude != null ? "+DoRA" : "") + (biasDiff != null ? "+bias" : "");
  }

  /** Alpha as stored (kohya's {@code .alpha}, PEFT's {@code lora_alpha}). */
  public double alpha() {
    return alpha;
  }

  /** How alpha and rank give the scale. */
  public ScaleRule scaleRule() {
    return scaleRule;
  }

  /**
   * The rank r: of the factors, of LoHa's first Hadamard half, of LoKr's factored w2 (else w1);
   * 0 for a LoKr with no factored part and for a full difference.
   */
  public int rank() {
    return adapterKind == AdapterKind.LORA ? Math.toIntExact(down.dim(0)) : KindMath.rank(adapterKind, parts);
  }

  /**
   * The scale s of the update: α/r (α/√r with rsLoRA) for LoRA, LoCon and LoHa; α/r for a LoKr
   * with a factored part and 1 for one without (ComfyUI {@code lokr.py}, LyCORIS {@code lokr.py});
   * 1 for a full difference.
   */
  public double scale() {
    return adapterKind == AdapterKind.LORA ? scaleRule.scale(alpha, rank()) : KindMath.scale(adapterKind, parts, alpha, scaleRule);
  }

  /**
   * An upper bound of the rank of the update as an [out, in·kh·kw] matrix: r for LoRA and LoCon,
   * r₁·r₂ for LoHa, the product of the factors' ranks for LoKr, min(out, in·kh·kw) for a full
   * difference. A merge re-ranks a materialised update to at most this by default, which keeps it
   * exact.
   */
  public int updateRankBound() {
    return adapterKind == AdapterKind.LORA ? rank() : Math.toIntExact(KindMath.rankBound(adapterKind, parts, shape));
  }

  /** Linear or convolution. */
  public Kind kind() {
    if (shape != null) {
      return shape.length == 4 ? Kind.CONV : Kind.LINEAR;
    }
    return down.rank() == 4 ? Kind.CONV : Kind.LINEAR;
  }

  /**
   * Input features (linear) or channels (convolution); in·kh·kw for a flattened convolution; 1
   * for a 1-d weight (a replaced norm scale).
   */
  public long inFeatures() {
    return shape != null ? (shape.length == 1 ? 1 : shape[1]) : down.dim(1);
  }

  /** Output features (linear) or channels (convolution). */
  public long outFeatures() {
    return shape != null ? shape[0] : up.dim(0);
  }

  /** Kernel height and width (1 for linear layers). */
  public long kernelSize() {
    if (shape != null) {
      return shape.length == 4 ? shape[2] : 1;
    }
    return kind() == Kind.CONV ? down.dim(2) : 1;
  }

  /**
   * The shape of the base weight this updates: [out, in] or [out, in, kh, kw]; [out, in·kh·kw]
   * for a LoHa or LoKr convolution whose reader could not tell the kernel.
   */
  public long[] weightShape() {
    if (shape != null) {
      return shape.clone();
    }
    return kind() == Kind.CONV
        ? new long[] {outFeatures(), inFeatures(), down.dim(2), down.dim(3)}
        : new long[] {outFeatures(), inFeatures()};
  }

  /** The element type of the factors (of A where they differ; of the first part for other kinds). */
  public DType dtype() {
    return down != null ? down.dtype() : parts.values().iterator().next().dtype();
  }

  /** This module with another key. */
  public LoraModule withKey(ModuleKey newKey) {
    checkNotNull(newKey, "newKey");
    return new LoraModule(newKey, down, up, alpha, scaleRule, adapterKind, parts, shape, magnitude, biasDiff);
  }

  /**
   * The update s·B·A in float64, row-major in the base weight's layout. Meant for checks and
   * small modules: it allocates out·in·k·k doubles.
   */
  public double[] deltaF64() {
    if (adapterKind == AdapterKind.REPLACEMENT) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s' is a replacement: it has no update ΔW, its tensor takes the base weight's place",
              key));
    }
    if (adapterKind != AdapterKind.LORA) {
      double[] delta = KindMath.unscaledDelta(adapterKind, parts);
      double s = scale();
      if (s != 1) {
        for (int i = 0; i < delta.length; i++) {
          delta[i] *= s;
        }
      }
      return delta;
    }
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

  /**
   * The weight this module alone makes of {@code weight} (row-major, as {@link #deltaF64()}) at
   * user weight {@code w}, in float64: {@code W + w·ΔW}, or with a DoRA magnitude {@code m / (‖W +
   * w·ΔW‖ + ε) · (W + w·ΔW)}; a replacement's tensor for w ≠ 0 and {@code W} for w = 0. A new array; {@code weight} is not changed.
   */
  public double[] fusedF64(double[] weight, double w) {
    return fusedF64(weight, w, DoraMagnitude.Weighting.INSIDE_NORM);
  }

  /**
   * The weight this module alone makes of {@code weight} at user weight {@code w}, as {@link
   * #fusedF64(double[], double)}, with a DoRA magnitude weighted as {@code weighting} says: for
   * {@link DoraMagnitude.Weighting#BLEND}, {@code W + w·(DoRA(W) − W)} with DoRA at weight 1.
   */
  public double[] fusedF64(double[] weight, double w, DoraMagnitude.Weighting weighting) {
    checkNotNull(weight, "weight");
    checkNotNull(weighting, "weighting");
    if (adapterKind == AdapterKind.REPLACEMENT) {
      double[] replacement = replacementWeight().toDoubleArray();
      if (weight.length != replacement.length) {
        throw new IllegalArgumentException(
            String.format(Locale.ROOT, "module '%s': weight of %d values, replacement of %d", key, weight.length, replacement.length));
      }
      // All or nothing: w = 0 leaves the base, any other w replaces it with the tensor unscaled.
      return w == 0 ? weight.clone() : replacement;
    }
    if (magnitude != null && weighting == DoraMagnitude.Weighting.BLEND) {
      double[] dora = fusedF64(weight, 1, DoraMagnitude.Weighting.INSIDE_NORM);
      for (int i = 0; i < dora.length; i++) {
        dora[i] = weight[i] + w * (dora[i] - weight[i]);
      }
      return dora;
    }
    double[] delta = deltaF64();
    if (weight.length != delta.length) {
      throw new IllegalArgumentException(
          String.format(Locale.ROOT, "module '%s': weight of %d values, update of %d", key, weight.length, delta.length));
    }
    double[] sum = new double[delta.length];
    for (int i = 0; i < sum.length; i++) {
      sum[i] = weight[i] + w * delta[i];
    }
    return magnitude == null ? sum : KindMath.renormalise(sum, Math.toIntExact(outFeatures()), magnitude);
  }

  /** Equal when key, kind, tensors, alpha, scale rule, magnitude and bias difference are equal. */
  @Override
  public boolean equals(Object other) {
    if (!(other instanceof LoraModule)) {
      return false;
    }
    LoraModule that = (LoraModule) other;
    return key.equals(that.key)
        && java.util.Objects.equals(down, that.down)
        && java.util.Objects.equals(up, that.up)
        && Double.compare(alpha, that.alpha) == 0
        && scaleRule == that.scaleRule
        && adapterKind == that.adapterKind
        && parts.equals(that.parts)
        && Arrays.equals(shape, that.shape)
        && java.util.Objects.equals(magnitude, that.magnitude)
        && java.util.Objects.equals(biasDiff, that.biasDiff);
  }

  @Override
  public int hashCode() {
    return java.util.Objects.hash(key, down, up, alpha, scaleRule, adapterKind, parts, Arrays.hashCode(shape), magnitude, biasDiff);
  }

  @Override
  public String toString() {
    if (adapterKind != AdapterKind.LORA || !isPlainLora()) {
      return String.format(
          Locale.ROOT, "%s{%s, rank=%d, alpha=%s, shape=%s, parts=%s}", key, kindName(), rank(), alpha,
          Arrays.toString(weightShape()), adapterKind == AdapterKind.LORA ? "{down=" + down + ", up=" + up + "}" : parts);
    }
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

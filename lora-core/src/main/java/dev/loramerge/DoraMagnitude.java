package dev.loramerge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import java.util.Locale;

/**
 * A DoRA magnitude: the fused weight is {@code m / (‖W + w·ΔW‖ + ε) · (W + w·ΔW)}, the norm taken
 * per output row (over the input and kernel dimensions) or per input channel (over the output and
 * kernel dimensions), with the user's weight w inside the norm, as PEFT applies it
 * ({@code peft/tuners/lora/dora.py}: {@code get_weight_norm} adds {@code scaling · lora_weight}
 * before the norm) and as diffusers does when it loads a LyCORIS DoRA.
 *
 * <ul>
 *   <li>PEFT's {@code lora_magnitude_vector} [out]: per output row, ε = 0.
 *   <li>LyCORIS's {@code dora_scale} ({@code lycoris/modules/locon.py} {@code apply_weight_decompose}):
 *       [out, 1(, 1, 1)] with {@code wd_on_out} (per output row), [1, in(, 1, 1)] without it (per
 *       input channel), and ε = float32's machine epsilon 2⁻²³ added to the norm.
 * </ul>
 *
 * @param values the magnitudes as stored (their shape tells LyCORIS's two orientations apart)
 * @param perOutput whether the norm is per output row (else per input channel)
 * @param epsilon what is added to each norm before dividing
 */
public record DoraMagnitude(TensorData values, boolean perOutput, double epsilon) {
  /**
   * How a fuse applies the user's weight w to a DoRA module.
   *
   * <ul>
   *   <li>{@link #INSIDE_NORM}: {@code m / (‖W + w·ΔW‖ + ε) · (W + w·ΔW)}, PEFT's forward and
   *       diffusers' loading of a LyCORIS DoRA (the default);
   *   <li>{@link #BLEND}: {@code W + w·(DoRA(W) − W)} with {@code DoRA(W) = m / (‖W + ΔW‖ + ε) · (W
   *       + ΔW)}, the whole module at weight 1 blended with the base, as ComfyUI applies a LoRA's
   *       strength to a DoRA module ({@code comfy/weight_adapter/base.py} {@code weight_decompose}:
   *       {@code weight += strength * (weight_calc - weight)}). At w = 1 both are DoRA(W).
   * </ul>
   */
  public enum Weighting {
    /** w scales ΔW inside the norm. */
    INSIDE_NORM,
    /** w blends the base with the module's weight at 1. */
    BLEND
  }

  /** float32's machine epsilon, which LyCORIS adds to the norm ({@code torch.finfo(float32).eps}). */
  public static final double LYCORIS_EPSILON = Math.scalb(1.0, -23);

  /** Validates. */
  public DoraMagnitude {
    checkNotNull(values, "values");
    checkArgument(values.dtype().isFloatingPoint(), "a DoRA magnitude must be floating point, got %s", values.dtype());
    checkArgument(epsilon >= 0 && Double.isFinite(epsilon), "epsilon must be finite and at least 0, got %s", epsilon);
  }

  /** PEFT's {@code lora_magnitude_vector}: one magnitude per output row, no ε. */
  public static DoraMagnitude peft(TensorData values) {
    return new DoraMagnitude(values, true, 0);
  }

  /**
   * LyCORIS's {@code dora_scale}: per output row when its first dimension is the weight's output
   * size and every other is 1, else per input channel.
   */
  public static DoraMagnitude lycoris(TensorData values, long outFeatures) {
    boolean perOutput = values.dim(0) == outFeatures && values.numel() == outFeatures;
    return new DoraMagnitude(values, perOutput, LYCORIS_EPSILON);
  }

  /** How many norms there are: the output or the input size. */
  public long count() {
    return values.numel();
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT, "DoraMagnitude{%s, per %s, epsilon=%s}", values, perOutput ? "output row" : "input channel", epsilon);
  }
}

package dev.loramerge.internal.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.internal.numeric.FloatFormats;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.util.Locale;

/**
 * Scaled float8 weights, as in ComfyUI's "fp8_scaled" checkpoints: the weight is the stored
 * float8 value times a float scale, one per tensor or one per output row (comfy/ops.py,
 * {@code scaled_fp8_ops}: {@code weight * self.scale_weight}). A fuse decodes stored·scale,
 * adds the update in float64 and stores the float8 value nearest to W'/scale, keeping the scale.
 *
 * <p>The quotient is rounded once from its exact value. The float64 quotient is off by at most
 * half an ulp (2⁻⁵³ relative); where it lies within {@link #NEAR} of a float8 rounding boundary,
 * W' is compared with boundary·scale exactly instead. With a float32 scale boundary·scale is
 * itself a double (at most 5 + 24 significant bits) and the float64 quotient never lands on the
 * wrong side; a float64 scale has no such room, and there the exact comparison decides.
 */
public final class ScaledFloat8 {
  /** Relative distance to a boundary below which the float64 quotient's error could decide. */
  private static final double NEAR = 0x1p-48;

  private ScaledFloat8() {}

  /**
   * The weight {@code stored} (little-endian float8 of {@code dtype}) holds: each value times its
   * row's scale ({@code scales} has one value, or one per row of equally long rows), in float64:
   * exact for scales of 24 significant bits or fewer (float32, fp16, bf16).
   */
  public static double[] decode(ByteBuffer stored, DType dtype, double[] scales) {
    checkArgument(DenseFusion.isFloat8(dtype), "a scaled weight is float8, got %s", dtype);
    double[] values = DenseFusion.decode(stored, dtype);
    int row = rowLength(values.length, scales.length);
    for (int i = 0; i < values.length; i++) {
      values[i] *= scales[i / row];
    }
    return values;
  }

  /**
   * Writes, from {@code into}'s position, the {@code dtype} codes nearest to each {@code fused}
   * value divided by its row's scale, ties to even, after checking every value.
   *
   * @throws LoraMergeException naming {@code label} for the first value that is not finite or
   *     whose quotient rounds beyond {@code dtype}'s largest finite value (never saturated)
   */
  public static void encode(double[] fused, DType dtype, double[] scales, ByteBuffer into, String label) {
    checkArgument(DenseFusion.isFloat8(dtype), "a scaled weight is float8, got %s", dtype);
    int row = rowLength(fused.length, scales.length);
    byte[] codes = new byte[fused.length];
    for (int i = 0; i < fused.length; i++) {
      double scale = scales[i / row];
      int code = nearest(fused[i], scale, dtype);
      if (code < 0) {
        if (!Double.isFinite(fused[i])) {
          throw Fusion.notRepresentable(label, fused[i], i, dtype);
        }
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "%s: fused value %s at element %d is %s times its scale %s, beyond the range of %s; lower the"
                    + " weights or the scale",
                label,
                fused[i],
                i,
                fused[i] / scale,
                scale,
                dtype.safetensorsName()));
      }
      codes[i] = (byte) code;
    }
    into.duplicate().put(codes);
  }

  /**
   * The {@code dtype} code nearest to the exact quotient {@code fused / scale}, ties to the even
   * code, with the quotient's sign; -1 when {@code fused} is not finite or the quotient rounds
   * past the largest finite value. {@code scale} is finite and not zero.
   */
  static int nearest(double fused, double scale, DType dtype) {
    if (!Double.isFinite(fused)) {
      return -1;
    }
    double quotient = fused / scale;
    int sign = Double.doubleToRawLongBits(quotient) < 0 ? 0x80 : 0;
    double magnitude = Math.abs(quotient);
    int top = top(dtype);
    int code = magnitudeCode(magnitude, dtype);
    int lower;
    if (code > top || magnitude > value(code, dtype)) {
      lower = Math.min(code, top);
    } else if (magnitude < value(code, dtype)) {
      lower = code - 1;
    } else {
      return sign | code;
    }
    // Positive codes are in value order; top + 1 stands for the step past the largest value.
    double boundary = (value(lower, dtype) + value(lower + 1, dtype)) / 2;
    if (Math.abs(magnitude - boundary) <= NEAR * boundary) {
      // |W'| against boundary·|scale|, both exact as decimals: the exact quotient's side.
      int side = new BigDecimal(Math.abs(fused)).compareTo(new BigDecimal(boundary).multiply(new BigDecimal(Math.abs(scale))));
      code = side < 0 ? lower : side > 0 ? lower + 1 : (lower & 1) == 0 ? lower : lower + 1;
    }
    return code > top ? -1 : sign | code;
  }

  /** The positive code {@code magnitude} rounds to, or top + 1 beyond the range. */
  private static int magnitudeCode(double magnitude, DType dtype) {
    int code = (dtype == DType.F8_E4M3 ? FloatFormats.toFloat8E4M3(magnitude) : FloatFormats.toFloat8E5M2(magnitude)) & 0x7f;
    return Math.min(code, top(dtype) + 1);
  }

  /** The value of positive {@code code}; top + 1 is one more step of the top binade (480, 65536). */
  private static double value(int code, DType dtype) {
    int top = top(dtype);
    if (code > top) {
      return 2 * value(top, dtype) - value(top - 1, dtype);
    }
    return dtype == DType.F8_E4M3 ? FloatFormats.fromFloat8E4M3(code) : FloatFormats.fromFloat8E5M2(code);
  }

  /** The largest finite positive code: 448 in e4m3fn (0x7f is NaN), 57344 in e5m2. */
  private static int top(DType dtype) {
    return dtype == DType.F8_E4M3 ? 0x7e : 0x7b;
  }

  private static int rowLength(int values, int scales) {
    checkArgument(scales > 0 && values % scales == 0, "%s scales for %s values", scales, values);
    return Math.max(1, values / scales);
  }
}

package dev.loramerge.io;

import com.google.common.collect.ImmutableSet;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.internal.fuse.DenseFusion;
import dev.loramerge.internal.json.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Locale;
import java.util.NavigableSet;
import java.util.Optional;
import java.util.TreeSet;

/**
 * The quantization layout of a base file's weights, as far as a fuse needs it: which float8
 * weights are scaled, by what, and which weights are quantized in a way a fuse does not know (and
 * must not fuse as if their stored values were the weights).
 *
 * <p>Scaled float8: {@code X.weight} (F8_E4M3 or F8_E5M2) times a float scale {@code
 * X.scale_weight} (ComfyUI's "fp8_scaled" checkpoints, marked by a root {@code scaled_fp8} tensor;
 * comfy/ops.py {@code scaled_fp8_ops}: {@code weight * self.scale_weight}) or {@code
 * X.weight_scale} (the name comfy/utils.py {@code convert_old_quants} gives it and comfy/ops.py
 * {@code mixed_precision_ops} loads, with an {@code X.comfy_quant} JSON {@code {"format":
 * "float8_e4m3fn"}}). The scale is a scalar or one value per output row ([out, 1, …], which
 * broadcasts over the rows as {@code weight * scale} does). {@code X.scale_input} or {@code
 * X.input_scale} scale the layer's input, not its weight, and are kept as they are.
 */
final class Float8Scales {
  /** Scale names in the order ComfyUI introduced them. */
  private static final ImmutableSet<String> WEIGHT_SCALES = ImmutableSet.of("scale_weight", "weight_scale");

  private static final ImmutableSet<String> INPUT_SCALES = ImmutableSet.of("scale_input", "input_scale");

  /** ComfyUI's per-layer quantization format (comfy/ops.py {@code mixed_precision_ops}). */
  private static final String FORMAT = "comfy_quant";

  /**
   * Quantization state of layouts a fuse does not know: bitsandbytes int8 ({@code SCB}, {@code
   * weight_format}, bitsandbytes/nn/modules.py {@code Linear8bitLt}), ComfyUI's NVFP4 second scale
   * ({@code weight_scale_2}), block-wise fp8 scales ({@code weight_scale_inv}, DeepSeek-V3 and
   * transformers' FineGrainedFP8) and a zero point. bitsandbytes' 4-bit state ({@code
   * X.weight.absmax}, {@code .quant_map}, {@code .nested_absmax}, {@code
   * .quant_state.bitsandbytes__nf4}, {@code Linear4bit._save_to_state_dict}) lies under the weight's
   * own name and is found as any tensor named {@code X.weight.…}.
   */
  private static final ImmutableSet<String> UNKNOWN =
      ImmutableSet.of("SCB", "weight_format", "weight_scale_2", "weight_scale_inv", "weight_zero_point");

  private final SafetensorsFile file;
  private final NavigableSet<String> names;

  private Float8Scales(SafetensorsFile file) {
    this.file = file;
    this.names = new TreeSet<>();
    file.tensors().forEach(spec -> names.add(spec.name()));
  }

  /** The layout of {@code file}'s weights; the scales are read from it when asked for. */
  static Float8Scales of(SafetensorsFile file) {
    return new Float8Scales(file);
  }

  /** Whether any weight of the file has a scale, so that its stored values are not its weights. */
  boolean anyScaled() {
    return names.stream().anyMatch(name -> name.equals("scaled_fp8")
        || WEIGHT_SCALES.stream().anyMatch(scale -> name.endsWith("." + scale)));
  }

  /**
   * The scales of the weight {@code spec} (one value, or one per row), if it is a scaled float8
   * weight; empty for a weight stored as its values.
   *
   * @throws LoraMergeException naming the tensor when the weight is quantized in a layout this
   *     class does not know, or its scale is of a type, shape or value it does not understand
   * @throws IOException if a scale cannot be read
   */
  Optional<double[]> scales(TensorSpec spec) throws IOException {
    String name = spec.name();
    if (!name.endsWith(".weight")) {
      return Optional.empty();
    }
    String module = name.substring(0, name.length() - ".weight".length());
    for (String sibling : names.subSet(module + ".", true, module + "/", false)) {
      String part = sibling.substring(module.length() + 1);
      if (part.startsWith("weight.") || UNKNOWN.contains(part)) {
        throw refused(sibling, "is quantization state of a layout that cannot be fused (only float8 with a float"
            + " scale can), beside weight '" + name + "'; fuse into an unquantized base");
      }
    }
    Optional<String> scale = Optional.empty();
    for (String candidate : WEIGHT_SCALES) {
      if (names.contains(module + "." + candidate)) {
        if (scale.isPresent()) {
          throw refused(module + "." + candidate, "and '" + scale.get() + "' both scale weight '" + name + "'");
        }
        scale = Optional.of(module + "." + candidate);
      }
    }
    if (scale.isEmpty()) {
      for (String other : ImmutableSet.<String>builder().addAll(INPUT_SCALES).add(FORMAT).build()) {
        if (names.contains(module + "." + other)) {
          throw refused(module + "." + other, "belongs to a quantized layer but weight '" + name + "' has no scale ("
              + String.join(" or ", WEIGHT_SCALES) + "); this layout cannot be fused");
        }
      }
      return Optional.empty();
    }
    return Optional.of(values(spec, scale.get(), module));
  }

  private double[] values(TensorSpec weight, String scaleName, String module) throws IOException {
    TensorSpec scale = file.spec(scaleName).orElseThrow();
    if (!DenseFusion.isFloat8(weight.dtype())) {
      throw refused(scaleName, String.format(Locale.ROOT, "scales weight '%s', which is %s; only a float8 weight with a"
          + " float scale can be fused", weight.name(), weight.dtype().safetensorsName()));
    }
    if (!scale.dtype().isFloatingPoint() || DenseFusion.isFloat8(scale.dtype())) {
      throw refused(scaleName, String.format(Locale.ROOT, "is %s; a weight scale must be F32, F64, F16 or BF16",
          scale.dtype().safetensorsName()));
    }
    long[] shape = scale.shape();
    long numel = TensorData.numel(shape);
    long rows = weight.shape().length == 0 ? 1 : weight.shape()[0];
    boolean scalar = numel == 1;
    boolean perRow = shape.length == weight.shape().length && shape.length > 0 && shape[0] == rows && numel == rows;
    if (!scalar && !perRow) {
      throw refused(scaleName, String.format(Locale.ROOT, "has shape %s beside weight '%s' %s; a weight scale must be"
          + " a scalar or one value per output row (%s)", Arrays.toString(shape), weight.name(),
          Arrays.toString(weight.shape()), Arrays.toString(perRowShape(weight.shape()))));
    }
    double[] values = file.tensor(scaleName).toDoubleArray();
    for (int i = 0; i < values.length; i++) {
      if (!(values[i] > 0) || !Double.isFinite(values[i])) {
        throw refused(scaleName, String.format(Locale.ROOT, "holds %s at element %d; a weight scale must be positive"
            + " and finite", values[i], i));
      }
    }
    checkFormat(weight, module);
    return values;
  }

  /** The format an {@code X.comfy_quant} tensor names must be the weight's own float8 type. */
  private void checkFormat(TensorSpec weight, String module) throws IOException {
    String name = module + "." + FORMAT;
    if (!names.contains(name)) {
      return;
    }
    String expected = weight.dtype() == DType.F8_E4M3 ? "float8_e4m3fn" : "float8_e5m2";
    TensorData tensor = file.tensor(name);
    Object format = null;
    if (tensor.dtype() == DType.U8) {
      byte[] bytes = new byte[tensor.bytes().remaining()];
      tensor.bytes().duplicate().get(bytes);
      try {
        format = Json.parseObject(new String(bytes, StandardCharsets.UTF_8)).get("format");
      } catch (IOException e) {
        format = null;
      }
    }
    if (!expected.equals(format)) {
      throw refused(name, String.format(Locale.ROOT, "names format %s, not %s for %s weight '%s'; this layout cannot"
          + " be fused", format == null ? "none" : "'" + format + "'", expected, weight.dtype().safetensorsName(),
          weight.name()));
    }
  }

  private static long[] perRowShape(long[] weight) {
    long[] shape = new long[Math.max(1, weight.length)];
    Arrays.fill(shape, 1);
    shape[0] = weight.length == 0 ? 1 : weight[0];
    return shape;
  }

  private static LoraMergeException refused(String tensor, String why) {
    return new LoraMergeException("tensor '" + tensor + "' " + why);
  }
}

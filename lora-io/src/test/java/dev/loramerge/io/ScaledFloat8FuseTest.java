package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.Float8Reference;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Fusing into scaled float8 bases: the weight is the stored float8 value times its scale, and the
 * fused weight is stored as the float8 value nearest to W'/scale, ties to even, scale kept.
 *
 * <p>Where the names come from: ComfyUI comfy/ops.py {@code scaled_fp8_ops} ({@code X.scale_weight}
 * and {@code X.scale_input}, float32; the weight is {@code weight * self.scale_weight}, and a
 * rewritten weight is stored as {@code weight / self.scale_weight} in {@code set_weight});
 * comfy/utils.py {@code convert_old_quants} (the root {@code scaled_fp8} marker, {@code
 * scale_weight} renamed {@code weight_scale}, an {@code X.comfy_quant} uint8 JSON {@code
 * {"format": "float8_e4m3fn"}}); comfy/ops.py {@code mixed_precision_ops} (loads {@code
 * weight_scale}; NVFP4's {@code weight_scale_2}); bitsandbytes nn/modules.py ({@code
 * Linear8bitLt}: {@code SCB}, {@code weight_format}; {@code Linear4bit}: {@code weight.absmax},
 * {@code weight.quant_map}, {@code weight.quant_state.bitsandbytes__nf4}).
 *
 * <p>Expected values are computed apart from the library: float8 values by {@link
 * Float8Reference}, and the nearest code to the exact quotient by comparing |W'| with each
 * rounding boundary times the scale in {@link BigDecimal}.
 */
class ScaledFloat8FuseTest {
  private static final ModuleKey PROJ_IN = TinyLora.KEYS[0];
  private static final ModuleKey TO_Q = TinyLora.KEYS[1];
  private static final String PROJ_IN_WEIGHT = PROJ_IN.path() + ".weight";
  private static final String TO_Q_WEIGHT = TO_Q.path() + ".weight";

  @TempDir Path folder;

  static Stream<Arguments> layouts() {
    return Stream.of(
        Arguments.of(DType.F8_E4M3, "scale_weight"),
        Arguments.of(DType.F8_E5M2, "scale_weight"),
        Arguments.of(DType.F8_E4M3, "weight_scale"),
        Arguments.of(DType.F8_E5M2, "weight_scale"));
  }

  @ParameterizedTest(name = "{0}, {1}")
  @MethodSource("layouts")
  void everyFusedValueIsTheExactQuotientRoundedOnceAndTheScalesStay(DType dtype, String scaleName) throws IOException {
    boolean e4m3 = dtype == DType.F8_E4M3;
    Random random = new Random(29);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("scaled_fp8", TensorData.of(dtype, new long[] {0}, ByteBuffer.allocate(0)));
    // proj_in scaled by one float32 value, to_q by one per output row.
    tensors.put(PROJ_IN_WEIGHT, storedCodes(random, dtype, 10, 12));
    tensors.put(PROJ_IN.path() + "." + scaleName, TensorData.ofFloats(new float[] {(float) (0.01 * (1 + random.nextDouble()))}));
    tensors.put(PROJ_IN.path() + ".scale_input", TensorData.ofFloats(new float[] {1f}));
    tensors.put(TO_Q_WEIGHT, storedCodes(random, dtype, 12, 12));
    float[] rows = new float[12];
    for (int i = 0; i < rows.length; i++) {
      rows[i] = (float) (0.01 * (1 + random.nextDouble()));
    }
    tensors.put(TO_Q.path() + "." + scaleName, TensorData.ofFloats(rows, 12, 1));
    if (scaleName.equals("weight_scale")) {
      for (ModuleKey key : new ModuleKey[] {PROJ_IN, TO_Q}) {
        tensors.put(key.path() + ".comfy_quant", format(e4m3 ? "float8_e4m3fn" : "float8_e5m2"));
      }
    }
    Path base = folder.resolve("base.safetensors");
    Safetensors.write(base, tensors, Map.of());
    LoraAdapter adapter = dyadicAdapter(random);
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, 0.5).build());
    Path fused = folder.resolve("fused.safetensors");
    fuser.fuseInto(SafetensorsWeights.of(base, fused));

    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      for (ModuleKey key : new ModuleKey[] {PROJ_IN, TO_Q}) {
        String name = key.path() + ".weight";
        double[] scales = before.tensor(key.path() + "." + scaleName).toDoubleArray();
        // Factors of a few bits: ΔW and W + ΔW are exact in float64, whatever the order of sums.
        double[] delta = TinyLora.weightedSum(key, new LoraAdapter[] {adapter}, new double[] {0.5});
        ByteBuffer stored = before.tensor(name).bytes();
        ByteBuffer written = after.tensor(name).bytes();
        int row = delta.length / scales.length;
        int changed = 0;
        for (int i = 0; i < delta.length; i++) {
          double scale = scales[i / row];
          double weight = Float8Reference.decode(e4m3, stored.get(i) & 0xff) * scale;
          int expected = exactNearest(e4m3, weight + delta[i], scale);
          assertThat(written.get(i) & 0xff).as("%s[%d]: W %s, ΔW %s, scale %s", name, i, weight, delta[i], scale)
              .isEqualTo(expected);
          changed += expected != (stored.get(i) & 0xff) ? 1 : 0;
        }
        assertThat(changed).as("elements of %s the update changes", name).isGreaterThan(delta.length / 2);
      }
      for (String name : tensors.keySet()) {
        if (!name.equals(PROJ_IN_WEIGHT) && !name.equals(TO_Q_WEIGHT)) {
          assertThat(after.tensor(name).bytes()).as("untouched tensor %s", name).isEqualTo(before.tensor(name).bytes());
        }
      }
    }
    Path restored = folder.resolve("restored.safetensors");
    fuser.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    assertThat(Files.readAllBytes(restored)).as("restored file").isEqualTo(Files.readAllBytes(base));
  }

  /**
   * With a float64 scale s = 1 + 2⁻⁵², W = fl(1.125·s) = 1.125 + 2⁻⁵² and W' = W + 1/16 = 1.1875 +
   * 2⁻⁵², just below 1.1875·s: the exact W'/s is below the e4m3 midpoint 1.1875 (between 1.125 and
   * 1.25), but the float64 quotient is 1.1875 itself, which ties to the even 1.25. With a float32
   * scale of 3, W' = 3.5625 is exactly 1.1875·3: a true tie, to the even 1.25.
   */
  @Test
  void nearATieTheExactQuotientDecides() throws IOException {
    double scale = 1 + 0x1p-52;
    double fusedNearTie = 1.125 * scale + 0.0625;
    assertThat(fusedNearTie).as("W'").isEqualTo(1.1875 + 0x1p-52);
    assertThat(fusedNearTie / scale).as("the float64 quotient").isEqualTo(1.1875);
    assertThat(Float8Reference.nearest(true, fusedNearTie / scale)).as("the float64 quotient, rounded").hasValue(0x3a);
    assertThat(exactNearest(true, fusedNearTie, scale)).as("the exact quotient, rounded").isEqualTo(0x39);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put(TO_Q_WEIGHT, filled(DType.F8_E4M3, (byte) 0x39, 12, 12));
    tensors.put(TO_Q.path() + ".scale_weight", TensorData.ofDoubles(new double[] {scale}, DType.F64));
    tensors.put(PROJ_IN_WEIGHT, filled(DType.F8_E4M3, (byte) 0x39, 10, 12));
    tensors.put(PROJ_IN.path() + ".scale_weight", TensorData.ofFloats(new float[] {3f}));
    Path base = folder.resolve("base.safetensors");
    Safetensors.write(base, tensors, Map.of());
    // ΔW = 0.25·0.25 = 1/16 on to_q, 0.75·0.25 = 3/16 on proj_in (3·1.125 + 3/16 = 3·1.1875).
    LoraAdapter adapter = LoraAdapter.builder().name("tie")
        .add(LoraModule.of(TO_Q, constant(0.25, 1, 12), constant(0.25, 12, 1), 1))
        .add(LoraModule.of(PROJ_IN, constant(0.25, 1, 12), constant(0.75, 10, 1), 1))
        .build();
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser.of(LoraMerger.builder().add(adapter, 1).build()).fuseInto(SafetensorsWeights.of(base, fused));
    try (SafetensorsFile after = SafetensorsFile.open(fused)) {
      assertThat(distinct(after.tensor(TO_Q_WEIGHT))).as("to_q, exact quotient just below 1.1875").containsExactly(0x39);
      assertThat(distinct(after.tensor(PROJ_IN_WEIGHT))).as("proj_in, quotient exactly 1.1875").containsExactly(0x3a);
    }
  }

  @Test
  void aQuotientBeyondTheRangeIsRefusedNamingTheModuleAndNothingIsWritten() throws IOException {
    Path base = base(ImmutableMap.of(TO_Q.path() + ".scale_weight", TensorData.ofFloats(new float[] {0x1p-10f})));
    // W = 1.0·2⁻¹⁰, ΔW = 0.5: W'/s = 513, past e4m3fn's 464.
    LoraAdapter adapter = LoraAdapter.builder().name("big")
        .add(LoraModule.of(TO_Q, constant(1, 1, 12), constant(0.5, 12, 1), 1)).build();
    assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(adapter, 1).build())
            .fuseInto(SafetensorsWeights.of(base, folder.resolve("fused.safetensors"))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("base.safetensors: module 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q' (weight"
            + " 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight'): fused value 0.5009765625 at"
            + " element 0 is 513.0 times its scale 9.765625E-4, beyond the range of F8_E4M3; lower the weights or the"
            + " scale");
    assertThat(folderContents()).containsExactly("base.safetensors");
  }

  static Stream<Arguments> unknownLayouts() {
    String q = TO_Q.path();
    TensorData one = TensorData.ofFloats(new float[] {1f});
    return Stream.of(
        Arguments.of("a 1-D scale", ImmutableMap.of(q + ".scale_weight", TensorData.ofFloats(new float[12], 12)),
            "tensor '" + q + ".scale_weight' has shape [12] beside weight '" + q + ".weight' [12, 12]; a weight scale must"
                + " be a scalar or one value per output row ([12, 1])"),
        Arguments.of("an input scale alone", ImmutableMap.of(q + ".scale_input", one),
            "tensor '" + q + ".scale_input' belongs to a quantized layer but weight '" + q + ".weight' has no scale"
                + " (scale_weight or weight_scale); this layout cannot be fused"),
        Arguments.of("a zero scale", ImmutableMap.of(q + ".scale_weight", TensorData.ofFloats(new float[] {0f})),
            "tensor '" + q + ".scale_weight' holds 0.0 at element 0; a weight scale must be positive and finite"),
        Arguments.of("two scales", ImmutableMap.of(q + ".scale_weight", one, q + ".weight_scale", one),
            "tensor '" + q + ".weight_scale' and '" + q + ".scale_weight' both scale weight '" + q + ".weight'"),
        Arguments.of("an int8 format", ImmutableMap.of(q + ".weight_scale", one, q + ".comfy_quant", format("int8_tensorwise")),
            "tensor '" + q + ".comfy_quant' names format 'int8_tensorwise', not float8_e4m3fn for F8_E4M3 weight '" + q
                + ".weight'; this layout cannot be fused"),
        Arguments.of("nf4 state", ImmutableMap.of(q + ".weight.absmax", one),
            "tensor '" + q + ".weight.absmax' is quantization state of a layout that cannot be fused (only float8 with a"
                + " float scale can), beside weight '" + q + ".weight'; fuse into an unquantized base"),
        Arguments.of("int8 state", ImmutableMap.of(q + ".SCB", one),
            "tensor '" + q + ".SCB' is quantization state of a layout that cannot be fused (only float8 with a float"
                + " scale can), beside weight '" + q + ".weight'; fuse into an unquantized base"));
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("unknownLayouts")
  void aLayoutNotUnderstoodIsRefusedNamingTheTensorAndNothingIsWritten(
      String description, Map<String, TensorData> extra, String message) throws IOException {
    Path base = base(extra);
    assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(toQ(), 0.5).build())
            .fuseInto(SafetensorsWeights.of(base, folder.resolve("fused.safetensors"))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("base.safetensors: " + message);
    assertThat(folderContents()).containsExactly("base.safetensors");
  }

  @Test
  void aScaleBesideAWeightThatIsNotFloat8IsRefused() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>(TinyLora.base(DType.BF16, 5));
    tensors.put(TO_Q.path() + ".scale_weight", TensorData.ofFloats(new float[] {1f}));
    Path base = folder.resolve("base.safetensors");
    Safetensors.write(base, tensors, Map.of());
    assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(toQ(), 0.5).build())
            .fuseInto(SafetensorsWeights.of(base, folder.resolve("fused.safetensors"))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("base.safetensors: tensor '" + TO_Q.path() + ".scale_weight' scales weight '" + TO_Q_WEIGHT
            + "', which is BF16; only a float8 weight with a float scale can be fused");
  }

  @Test
  void convertingAScaledBaseToAnotherDTypeIsRefused() throws IOException {
    Path base = base(ImmutableMap.of(TO_Q.path() + ".scale_weight", TensorData.ofFloats(new float[] {0.5f})));
    assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(toQ(), 0.5).build())
            .fuseInto(SafetensorsWeights.of(base, folder.resolve("fused.safetensors")).withDType(DType.BF16)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("base.safetensors: holds scaled float8 weights, whose scales would not follow a conversion to BF16;"
            + " fuse it keeping its types");
    assertThat(folderContents()).containsExactly("base.safetensors");
  }

  /**
   * The code nearest to the exact quotient {@code fused / scale} (scale positive), ties to the
   * even code, with {@code fused}'s sign; -1 past the largest finite value.
   */
  private static int exactNearest(boolean e4m3, double fused, double scale) {
    int sign = Double.doubleToRawLongBits(fused) < 0 ? 0x80 : 0;
    BigDecimal magnitude = new BigDecimal(Math.abs(fused));
    BigDecimal exactScale = new BigDecimal(scale);
    int top = e4m3 ? 0x7e : 0x7b;
    for (int code = 0; code <= top; code++) {
      double low = Float8Reference.decode(e4m3, code);
      double high = code < top ? Float8Reference.decode(e4m3, code + 1) : 2 * low - Float8Reference.decode(e4m3, code - 1);
      int side = magnitude.compareTo(new BigDecimal((low + high) / 2).multiply(exactScale));
      if (side < 0 || (side == 0 && (code & 1) == 0)) {
        return sign | code;
      }
      if (side == 0) {
        return code + 1 > top ? -1 : sign | (code + 1);
      }
    }
    return -1;
  }

  /** A base of F8_E4M3 1.0 everywhere in to_q (and proj_in), plus {@code extra}. */
  private Path base(Map<String, TensorData> extra) throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put(TO_Q_WEIGHT, filled(DType.F8_E4M3, (byte) 0x38, 12, 12));
    tensors.put(PROJ_IN_WEIGHT, filled(DType.F8_E4M3, (byte) 0x38, 10, 12));
    tensors.putAll(extra);
    Path base = folder.resolve("base.safetensors");
    Safetensors.write(base, tensors, Map.of());
    return base;
  }

  /** Random finite codes of either sign, up to 8 in magnitude. */
  private static TensorData storedCodes(Random random, DType dtype, long rows, long columns) {
    byte[] codes = new byte[Math.toIntExact(rows * columns)];
    int top = dtype == DType.F8_E4M3 ? 0x50 : 0x48;
    for (int i = 0; i < codes.length; i++) {
      codes[i] = (byte) (random.nextInt(top + 1) | (random.nextBoolean() ? 0x80 : 0));
    }
    return TensorData.of(dtype, new long[] {rows, columns}, ByteBuffer.wrap(codes).order(ByteOrder.LITTLE_ENDIAN));
  }

  private static TensorData filled(DType dtype, byte code, long rows, long columns) {
    byte[] codes = new byte[Math.toIntExact(rows * columns)];
    Arrays.fill(codes, code);
    return TensorData.of(dtype, new long[] {rows, columns}, ByteBuffer.wrap(codes));
  }

  /** Rank 2, alpha 2, factors k/16 in [-1/2, 1/2]: every product and sum is exact in float64. */
  private static LoraAdapter dyadicAdapter(Random random) {
    return LoraAdapter.builder().name("dyadic")
        .add(LoraModule.of(PROJ_IN, dyadic(random, 2, 12), dyadic(random, 10, 2), 2))
        .add(LoraModule.of(TO_Q, dyadic(random, 2, 12), dyadic(random, 12, 2), 2))
        .build();
  }

  private static TensorData dyadic(Random random, long rows, long columns) {
    float[] values = new float[Math.toIntExact(rows * columns)];
    for (int i = 0; i < values.length; i++) {
      values[i] = (random.nextInt(17) - 8) / 16f;
    }
    return TensorData.ofFloats(values, rows, columns);
  }

  /** A rank-1 LoRA on to_q alone. */
  private static LoraAdapter toQ() {
    return LoraAdapter.builder().name("style").add(LoraModule.of(TO_Q, constant(0.25, 1, 12), constant(0.25, 12, 1), 1)).build();
  }

  private static TensorData constant(double value, long rows, long columns) {
    float[] values = new float[Math.toIntExact(rows * columns)];
    Arrays.fill(values, (float) value);
    return TensorData.ofFloats(values, rows, columns);
  }

  /** ComfyUI's {@code X.comfy_quant}: the layer's JSON as uint8 (comfy/utils.py convert_old_quants). */
  private static TensorData format(String format) {
    byte[] json = ("{\"format\": \"" + format + "\"}").getBytes(StandardCharsets.UTF_8);
    return TensorData.of(DType.U8, new long[] {json.length}, ByteBuffer.wrap(json));
  }

  private static List<Integer> distinct(TensorData tensor) {
    ByteBuffer bytes = tensor.bytes();
    return java.util.stream.IntStream.range(0, bytes.remaining()).map(i -> bytes.get(i) & 0xff).distinct().boxed().toList();
  }

  private List<String> folderContents() throws IOException {
    try (Stream<Path> files = Files.list(folder)) {
      List<String> names = new ArrayList<>();
      files.forEach(file -> names.add(file.getFileName().toString()));
      return names;
    }
  }
}

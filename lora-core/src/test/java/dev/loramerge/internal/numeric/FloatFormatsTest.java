package dev.loramerge.internal.numeric;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.internal.linalg.Randoms;
import dev.loramerge.internal.numeric.FloatFormats.Kernel;
import dev.loramerge.testing.Float8Reference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class FloatFormatsTest {
  @Test
  void everyFiniteFloat16RoundTrips() {
    for (int bits = 0; bits < 0x10000; bits++) {
      double value = FloatFormats.fromFloat16(bits);
      if (Double.isNaN(value)) {
        continue;
      }
      assertThat(FloatFormats.toFloat16(value) & 0xffff)
          .as("fp16 bits 0x%04x (%s)", bits, value)
          .isEqualTo(bits);
    }
  }

  @Test
  void float16MidpointsRoundToEvenAndNeighboursRoundToNearest() {
    for (int bits = 0; bits < 0x7bff; bits++) {
      double low = FloatFormats.fromFloat16(bits);
      double high = FloatFormats.fromFloat16(bits + 1);
      double middle = (low + high) / 2;
      int even = (bits & 1) == 0 ? bits : bits + 1;
      assertThat(FloatFormats.toFloat16(middle) & 0xffff).as("midpoint above 0x%04x", bits).isEqualTo(even);
      assertThat(FloatFormats.toFloat16(Math.nextUp(middle)) & 0xffff).as("just above midpoint 0x%04x", bits).isEqualTo(bits + 1);
      assertThat(FloatFormats.toFloat16(Math.nextDown(middle)) & 0xffff).as("just below midpoint 0x%04x", bits).isEqualTo(bits);
      assertThat(FloatFormats.toFloat16(-middle) & 0xffff).as("negative midpoint 0x%04x", bits).isEqualTo(even | 0x8000);
    }
  }

  @Test
  void float16OverflowsToInfinityAtTheRoundingBoundary() {
    assertThat(FloatFormats.toFloat16(65504.0) & 0xffff).isEqualTo(0x7bff);
    assertThat(FloatFormats.toFloat16(Math.nextDown(65520.0)) & 0xffff).isEqualTo(0x7bff);
    assertThat(FloatFormats.toFloat16(65520.0) & 0xffff).as("the tie goes to even: infinity").isEqualTo(0x7c00);
    assertThat(FloatFormats.toFloat16(-1e9) & 0xffff).isEqualTo(0xfc00);
    assertThat(FloatFormats.fromFloat16(0x7e00)).isNaN();
    assertThat(FloatFormats.toFloat16(Double.NaN) & 0x7c00).isEqualTo(0x7c00);
  }

  @Test
  void roundingAFloatGivesTheBitsOfRoundingItAsADouble() {
    // Random bit patterns cover NaNs, infinities, subnormals and overflow; the double path is
    // the reference, checked at every midpoint above.
    SplittableRandom random = new SplittableRandom(5);
    for (int i = 0; i < 1_000_000; i++) {
      float value = Float.intBitsToFloat(random.nextInt());
      assertThat(FloatFormats.toFloat16(value)).as("fp16 of %s", value).isEqualTo(FloatFormats.toFloat16((double) value));
      assertThat(FloatFormats.toBFloat16(value)).as("bf16 of %s", value).isEqualTo(FloatFormats.toBFloat16((double) value));
    }
    for (int bits = 0; bits < 0x7c00; bits++) {
      float low = (float) FloatFormats.fromFloat16(bits);
      float middle = (low + (float) FloatFormats.fromFloat16(bits + 1)) / 2;
      for (float value : new float[] {low, middle, Math.nextUp(middle), Math.nextDown(middle), -middle}) {
        assertThat(FloatFormats.toFloat16(value)).as("fp16 of %s", value).isEqualTo(FloatFormats.toFloat16((double) value));
      }
    }
  }

  /** Every kernel this JVM can run: scalar, the Vector API (surefire adds the module), the JDK's conversions from JDK 21. */
  private static List<Kernel> kernels() {
    List<Kernel> kernels = new ArrayList<>(List.of(Kernel.SCALAR, Kernel.VECTOR_API));
    if (HardwareHalves.AVAILABLE) {
      kernels.add(Kernel.HARDWARE);
    }
    return kernels;
  }

  @Test
  void theJdksConversionsAreUsedFromJdk21() {
    assertThat(FloatFormats.VECTOR_API).as("surefire's argLine adds jdk.incubator.vector; without it this tests one path").isTrue();
    assertThat(HardwareHalves.AVAILABLE)
        .as("Float.float16ToFloat and floatToFloat16 on Java %s", Runtime.version())
        .isEqualTo(Runtime.version().feature() >= 21);
    assertThat(FloatFormats.KERNEL).isEqualTo(HardwareHalves.AVAILABLE ? Kernel.HARDWARE : Kernel.VECTOR_API);
  }

  @Test
  void bulkConversionsGiveTheScalarBitsOnEveryKernel() {
    SplittableRandom random = new SplittableRandom(8);
    // Every fp16/bf16 bit pattern (NaNs with every payload, signalling ones included), and random
    // float bits with an odd count for a scalar tail.
    int count = 0x10000 + 37;
    ByteBuffer halves = ByteBuffer.allocate(count * 2).order(ByteOrder.LITTLE_ENDIAN);
    float[] floats = new float[count];
    for (int i = 0; i < count; i++) {
      halves.putShort(i * 2, (short) i);
      floats[i] = i % 3 == 0 ? Float.intBitsToFloat(random.nextInt()) : (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(-28, 18)));
    }
    ByteBuffer readOnly = halves.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN);
    for (boolean float16 : new boolean[] {true, false}) {
      String format = float16 ? "fp16" : "bf16";
      for (Kernel kernel : kernels()) {
        float[] widened = new float[count];
        FloatFormats.widen(float16, readOnly, widened, kernel);
        ByteBuffer narrowed = ByteBuffer.allocate(count * 2).order(ByteOrder.LITTLE_ENDIAN);
        FloatFormats.narrow(float16, floats, narrowed, kernel);
        for (int i = 0; i < count; i++) {
          int bits = i & 0xffff;
          float expected = float16 ? FloatFormats.float16Value(bits) : FloatFormats.fromBFloat16(bits);
          assertThat(Float.floatToRawIntBits(widened[i]))
              .as("%s bits 0x%04x widened, %s", format, bits, kernel)
              .isEqualTo(Float.floatToRawIntBits(expected));
          short rounded = float16 ? FloatFormats.toFloat16(floats[i]) : FloatFormats.toBFloat16(floats[i]);
          assertThat(narrowed.getShort(i * 2))
              .as("%s of %s (bits 0x%08x), %s", format, floats[i], Float.floatToRawIntBits(floats[i]), kernel)
              .isEqualTo(rounded);
        }
      }
    }
  }

  @Test
  void compiledKernelsGiveTheScalarBitsForEveryFloat16AndForTiesSubnormalsNaNAndOverflow() {
    // The JDK's conversions run as CPU instructions only once C2 has compiled the loops, and the
    // CPU treats NaN payloads its own way: many rounds, each compared bit for bit.
    ByteBuffer every = ByteBuffer.allocate(0x20000).order(ByteOrder.LITTLE_ENDIAN);
    for (int bits = 0; bits < 0x10000; bits++) {
      every.putShort(2 * bits, (short) bits);
    }
    float[] floats = specialFloats(new SplittableRandom(11), 0x10000);
    short[] expected = new short[floats.length];
    for (int i = 0; i < floats.length; i++) {
      expected[i] = FloatFormats.toFloat16(floats[i]);
    }
    for (Kernel kernel : kernels()) {
      float[] widened = new float[0x10000];
      ByteBuffer narrowed = ByteBuffer.allocate(2 * floats.length).order(ByteOrder.LITTLE_ENDIAN);
      for (int round = 0; round < 60; round++) {
        FloatFormats.widen(true, every, widened, kernel);
        FloatFormats.narrow(true, floats, narrowed, kernel);
        for (int bits = 0; bits < 0x10000; bits++) {
          if (Float.floatToRawIntBits(widened[bits]) != Float.floatToRawIntBits(FloatFormats.float16Value(bits))) {
            assertThat(Integer.toHexString(Float.floatToRawIntBits(widened[bits])))
                .as("fp16 0x%04x widened by %s in round %d", bits, kernel, round)
                .isEqualTo(Integer.toHexString(Float.floatToRawIntBits(FloatFormats.float16Value(bits))));
          }
        }
        for (int i = 0; i < floats.length; i++) {
          if (narrowed.getShort(2 * i) != expected[i]) {
            assertThat(Integer.toHexString(narrowed.getShort(2 * i) & 0xffff))
                .as("fp16 of %s (bits 0x%08x) by %s in round %d", floats[i], Float.floatToRawIntBits(floats[i]), kernel, round)
                .isEqualTo(Integer.toHexString(expected[i] & 0xffff));
          }
        }
      }
    }
  }

  /**
   * {@code count} floats: every fp16 tie and its neighbours, subnormals, values around the
   * overflow boundary 65520, NaNs with random payloads and signs, infinities, and random bits.
   */
  private static float[] specialFloats(SplittableRandom random, int count) {
    float[] floats = new float[count];
    int n = 0;
    for (int bits = 0; bits < 0x7c00 && n + 3 <= count / 2; bits += 5) {
      float low = FloatFormats.float16Value(bits);
      float middle = (low + FloatFormats.float16Value(bits + 1)) / 2;
      floats[n++] = middle;
      floats[n++] = Math.nextUp(middle);
      floats[n++] = -Math.nextDown(middle);
    }
    for (float value : new float[] {65504f, 65519.996f, 65520f, -65520f, 1e9f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY,
        Float.MIN_VALUE, 0x1p-25f, Math.nextUp(0x1p-25f), 0x1p-24f, 0x1.8p-24f, 0x1p-14f, Math.nextDown(0x1p-14f), 0f, -0f}) {
      floats[n++] = value;
    }
    while (n < count) {
      int kind = random.nextInt(4);
      floats[n++] = switch (kind) {
        case 0 -> Float.intBitsToFloat((random.nextBoolean() ? 0xff800000 : 0x7f800000) | (1 + random.nextInt(0x7fffff)));
        case 1 -> (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(-30, -14)));
        default -> Float.intBitsToFloat(random.nextInt());
      };
    }
    return floats;
  }

  @Test
  void weightedSumsGiveTheBitsOfWideningSummingAndNarrowingOnEveryKernel() {
    SplittableRandom random = new SplittableRandom(12);
    int count = 3 * 4096 + 29;
    for (boolean float16 : new boolean[] {true, false}) {
      for (int inputs = 1; inputs <= 3; inputs++) {
        ByteBuffer[] factors = new ByteBuffer[inputs];
        float[] coefficients = new float[inputs];
        for (int k = 0; k < inputs; k++) {
          factors[k] = ByteBuffer.allocate(2 * count).order(ByteOrder.LITTLE_ENDIAN);
          for (int i = 0; i < count; i++) {
            // Mostly small normal values, some random bit patterns: NaN, infinities, subnormals, large values that overflow.
            float value = (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(-20, 4)));
            short bits = random.nextInt(50) == 0 ? (short) random.nextInt() : float16 ? FloatFormats.toFloat16(value) : FloatFormats.toBFloat16(value);
            factors[k].putShort(2 * i, bits);
          }
          coefficients[k] = (float) ((k % 2 == 0 ? 1 : -1) * Math.sqrt(0.7 / (k + 1)) * (k == 2 ? 4096 : 1));
        }
        short[] expected = new short[count];
        for (int i = 0; i < count; i++) {
          float sum = widened(float16, factors[0].getShort(2 * i)) * coefficients[0];
          for (int k = 1; k < inputs; k++) {
            sum += widened(float16, factors[k].getShort(2 * i)) * coefficients[k];
          }
          expected[i] = float16 ? FloatFormats.toFloat16(sum) : FloatFormats.toBFloat16(sum);
        }
        for (Kernel kernel : kernels()) {
          for (int round = 0; round < 50; round++) {
            ByteBuffer out = ByteBuffer.allocate(2 * count).order(ByteOrder.LITTLE_ENDIAN);
            FloatFormats.weightedSum(float16, factors, coefficients, out, count, kernel);
            for (int i = 0; i < count; i++) {
              if (out.getShort(2 * i) != expected[i]) {
                assertThat(Integer.toHexString(out.getShort(2 * i) & 0xffff))
                    .as("%s sum of %d inputs, element %d, %s, round %d", float16 ? "fp16" : "bf16", inputs, i, kernel, round)
                    .isEqualTo(Integer.toHexString(expected[i] & 0xffff));
              }
            }
          }
        }
      }
    }
  }

  @Test
  void scalingGivesTheBitsOfWideningMultiplyingAndNarrowingOnEveryKernel() {
    // Every bit pattern (NaNs, infinities, subnormals), at an odd offset into the input and the
    // output, with coefficients that shrink into subnormals, overflow, and are infinite. Not NaN:
    // which operand's sign a product of two NaNs keeps is the CPU's and the JIT's choice, on
    // every path alike.
    int count = 0x10000;
    ByteBuffer halves = ByteBuffer.allocate(2 * (count + 3)).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < count; i++) {
      halves.putShort(2 * (i + 3), (short) i);
    }
    for (boolean float16 : new boolean[] {true, false}) {
      for (float coefficient : new float[] {0.7f, -0.35f, 3e-5f, 4096f, 0f, Float.POSITIVE_INFINITY}) {
        short[] expected = new short[count];
        for (int i = 0; i < count; i++) {
          float product = widened(float16, (short) i) * coefficient;
          expected[i] = float16 ? FloatFormats.toFloat16(product) : FloatFormats.toBFloat16(product);
        }
        for (Kernel kernel : kernels()) {
          for (int round = 0; round < 20; round++) {
            short[] out = new short[count + 5];
            FloatFormats.scale(float16, halves, 3, coefficient, out, 5, count, kernel);
            for (int i = 0; i < count; i++) {
              if (out[5 + i] != expected[i]) {
                assertThat(Integer.toHexString(out[5 + i] & 0xffff))
                    .as("%s 0x%04x times %s, %s, round %d", float16 ? "fp16" : "bf16", i, coefficient, kernel, round)
                    .isEqualTo(Integer.toHexString(expected[i] & 0xffff));
              }
            }
          }
        }
      }
    }
  }

  private static float widened(boolean float16, short bits) {
    return float16 ? FloatFormats.float16Value(bits) : FloatFormats.fromBFloat16(bits);
  }

  @Test
  void theFloat16TableHoldsEveryValue() {
    for (int bits = 0; bits < 0x10000; bits++) {
      assertThat(Double.valueOf(FloatFormats.float16Value(bits)))
          .as("fp16 bits 0x%04x (NaN equal to NaN)", bits)
          .isEqualTo(Double.valueOf(FloatFormats.fromFloat16(bits)));
    }
  }

  @Test
  void bfloat16RoundsOnceFromDouble() {
    for (int bits = 0; bits < 0x7f7f; bits += 7) {
      double low = FloatFormats.fromBFloat16(bits);
      double high = FloatFormats.fromBFloat16(bits + 1);
      double middle = (low + high) / 2;
      int even = (bits & 1) == 0 ? bits : bits + 1;
      assertThat(FloatFormats.toBFloat16(low) & 0xffff).as("bf16 0x%04x", bits).isEqualTo(bits);
      assertThat(FloatFormats.toBFloat16(middle) & 0xffff).as("midpoint above 0x%04x", bits).isEqualTo(even);
      assertThat(FloatFormats.toBFloat16(Math.nextUp(middle)) & 0xffff).isEqualTo(bits + 1);
    }
  }

  @Test
  void bfloat16AvoidsTheDoubleRoundingOfGoingThroughFloat() {
    // 1 + 2^-8 + 2^-30 lies just above the bf16 midpoint between 1 and 1 + 2^-7; as a float it
    // becomes exactly the midpoint, which would then round down to 1.
    double value = 1 + Math.scalb(1.0, -8) + Math.scalb(1.0, -30);
    assertThat((double) FloatFormats.fromBFloat16(FloatFormats.toBFloat16(value))).isEqualTo(1 + Math.scalb(1.0, -7));
  }

  @Test
  void float8DecodesKnownValues() {
    assertThat(FloatFormats.fromFloat8E4M3(0x7e)).as("e4m3 max").isEqualTo(448.0);
    assertThat(FloatFormats.fromFloat8E4M3(0x7f)).isNaN();
    assertThat(FloatFormats.fromFloat8E4M3(0x01)).as("smallest subnormal").isEqualTo(Math.scalb(1.0, -9));
    assertThat(FloatFormats.fromFloat8E4M3(0xb8)).isEqualTo(-1.0);
    assertThat(FloatFormats.fromFloat8E5M2(0x7b)).as("e5m2 max").isEqualTo(57344.0);
    assertThat(FloatFormats.fromFloat8E5M2(0x7c)).isInfinite();
  }

  /**
   * Every float8 code, its neighbours' midpoints and points just beside them, against the nearest
   * code found here by exhaustive search over all 256 codes with exact BigDecimal distances (ties
   * to the even code); beyond the largest finite value e4m3fn gives NaN (it has no infinity) and
   * e5m2 infinity, never a saturated value.
   */
  @ParameterizedTest
  @ValueSource(booleans = {true, false})
  void float8RoundsOnceToNearestEvenAgainstAnExhaustiveSearch(boolean e4m3) {
    java.util.function.IntToDoubleFunction decode = e4m3 ? FloatFormats::fromFloat8E4M3 : FloatFormats::fromFloat8E5M2;
    java.util.function.DoubleToIntFunction encode =
        e4m3 ? value -> FloatFormats.toFloat8E4M3(value) & 0xff : value -> FloatFormats.toFloat8E5M2(value) & 0xff;
    double max = e4m3 ? FloatFormats.FLOAT8_E4M3_MAX : FloatFormats.FLOAT8_E5M2_MAX;
    java.util.List<Double> probes = new java.util.ArrayList<>();
    for (int code = 0; code < 256; code++) {
      double value = decode.applyAsDouble(code);
      double next = decode.applyAsDouble((code + 1) & 0xff);
      if (!Double.isFinite(value)) {
        continue;
      }
      probes.add(value);
      if (Double.isFinite(next) && Math.signum(next) == Math.signum(value) && Math.abs(next) > Math.abs(value)) {
        double middle = (value + next) / 2;
        probes.addAll(java.util.List.of(middle, Math.nextUp(middle), Math.nextDown(middle)));
      }
    }
    java.util.Random random = new java.util.Random(8);
    for (int i = 0; i < 20_000; i++) {
      probes.add((random.nextDouble() * 2 - 1) * max * 1.2 * Math.pow(2, -random.nextInt(20)));
    }
    for (double probe : probes) {
      int expected = nearestFloat8(probe, decode, max);
      int actual = encode.applyAsInt(probe);
      if (expected < 0) {
        assertThat(Double.isFinite(decode.applyAsDouble(actual))).as("%s beyond the range", probe).isFalse();
      } else if (decode.applyAsDouble(expected) == 0) {
        assertThat(decode.applyAsDouble(actual)).as("%s rounds to a zero", probe).isZero();
      } else {
        assertThat(actual).as("0x%02x for %s", actual, probe).isEqualTo(expected);
      }
    }
  }

  /** The code nearest {@code value} among all 256, ties to the even code; −1 past the range. */
  private static int nearestFloat8(double value, java.util.function.IntToDoubleFunction decode, double max) {
    java.math.BigDecimal exact = new java.math.BigDecimal(value);
    int best = -1;
    java.math.BigDecimal bestDistance = null;
    for (int code = 0; code < 256; code++) {
      double candidate = decode.applyAsDouble(code);
      if (!Double.isFinite(candidate) || (candidate == 0 && (code & 0x80) != 0)) {
        continue;
      }
      java.math.BigDecimal distance = exact.subtract(new java.math.BigDecimal(candidate)).abs();
      int compared = bestDistance == null ? -1 : distance.compareTo(bestDistance);
      if (compared < 0 || (compared == 0 && (code & 1) == 0)) {
        best = code;
        bestDistance = distance;
      }
    }
    // Past the largest finite value the next step (max + one ulp at max) would be nearer.
    double previous = Math.abs(decode.applyAsDouble(best)) == max ? max - Math.abs(decode.applyAsDouble(best - 1)) : 0;
    if (previous > 0) {
      java.math.BigDecimal beyond = new java.math.BigDecimal(Math.copySign(max + previous, value));
      int compared = exact.subtract(beyond).abs().compareTo(bestDistance);
      boolean maxIsEven = (best & 1) == 0;
      if (compared < 0 || (compared == 0 && !maxIsEven)) {
        return -1;
      }
    }
    return best;
  }

  /**
   * Every float8 code decodes to the value the OCP OFP8 specification gives it ({@link
   * Float8Reference}, written apart from {@link FloatFormats}), NaN for NaN and with the sign of
   * zero.
   */
  @ParameterizedTest
  @ValueSource(booleans = {true, false})
  void float8CodesDecodeAsTheSpecificationDefinesThem(boolean e4m3) {
    for (int code = 0; code < 256; code++) {
      double expected = Float8Reference.decode(e4m3, code);
      double actual = e4m3 ? FloatFormats.fromFloat8E4M3(code) : FloatFormats.fromFloat8E5M2(code);
      assertThat(Double.doubleToLongBits(actual))
          .as("%s code 0x%02x: %s, expected %s", e4m3 ? "e4m3fn" : "e5m2", code, actual, expected)
          .isEqualTo(Double.doubleToLongBits(expected));
    }
    assertThat(e4m3 ? FloatFormats.FLOAT8_E4M3_MAX : FloatFormats.FLOAT8_E5M2_MAX).isEqualTo(Float8Reference.max(e4m3));
  }

  /**
   * Every finite code's value, every midpoint between neighbours (and past the largest value, the
   * midpoint to the next step), and the doubles either side of each, both signs: the encoder gives
   * the specification's nearest code, ties to even, and a non-finite code exactly where the
   * reference rounds past the largest value. The doubles beside a midpoint are the same float32
   * as the midpoint, so an encoder that went through float32 would round them as ties.
   */
  @ParameterizedTest
  @ValueSource(booleans = {true, false})
  void float8EncodesEveryMidpointAndItsNeighboursOnceToNearestEven(boolean e4m3) {
    List<Double> probes = new ArrayList<>();
    for (int code = 0; code <= 0x7e; code++) {
      double low = Float8Reference.decode(e4m3, code);
      if (!Double.isFinite(low)) {
        break;
      }
      double next = Float8Reference.decode(e4m3, code + 1);
      double high = Double.isFinite(next) ? next : 2 * low - Float8Reference.decode(e4m3, code - 1);
      double middle = (low + high) / 2;
      assertThat((double) (float) Math.nextUp(middle)).as("float32 of the double above %s", middle).isEqualTo(middle);
      probes.addAll(List.of(low, middle, Math.nextUp(middle), Math.nextDown(middle)));
      if (!Double.isFinite(next)) {
        break;
      }
    }
    for (double magnitude : probes) {
      for (double probe : new double[] {magnitude, -magnitude}) {
        java.util.OptionalInt expected = Float8Reference.nearest(e4m3, probe);
        int actual = (e4m3 ? FloatFormats.toFloat8E4M3(probe) : FloatFormats.toFloat8E5M2(probe)) & 0xff;
        if (expected.isPresent()) {
          assertThat(actual).as("code for %s: 0x%02x, expected 0x%02x", probe, actual, expected.getAsInt())
              .isEqualTo(expected.getAsInt());
        } else {
          // e4m3fn has no infinity: its NaN, with the sign, as PyTorch gives.
          assertThat(actual).as("code for %s, which rounds past the largest value", probe)
              .isEqualTo((probe < 0 ? 0x80 : 0) | (e4m3 ? 0x7f : 0x7c));
        }
      }
    }
  }

  /**
   * The overflow boundaries of the format definitions: e4m3fn's largest value 448 is 0x7e (an
   * even mantissa), so 464, halfway to the next step 480, rounds to it and anything above is NaN
   * (never saturated to 448); e5m2's 57344 is 0x7b (odd), so 61440, halfway to 65536, overflows.
   */
  @Test
  void float8OverflowsOnlyWhereRoundingPassesTheLargestValue() {
    assertThat(FloatFormats.toFloat8E4M3(464.0) & 0xff).isEqualTo(0x7e);
    assertThat(FloatFormats.toFloat8E4M3(-464.0) & 0xff).isEqualTo(0xfe);
    assertThat(FloatFormats.toFloat8E4M3(Math.nextUp(464.0)) & 0xff).isEqualTo(0x7f);
    assertThat(FloatFormats.toFloat8E4M3(Double.NEGATIVE_INFINITY) & 0xff).isEqualTo(0xff);
    assertThat(FloatFormats.toFloat8E5M2(Math.nextDown(61440.0)) & 0xff).isEqualTo(0x7b);
    assertThat(FloatFormats.toFloat8E5M2(61440.0) & 0xff).isEqualTo(0x7c);
    assertThat(FloatFormats.toFloat8E5M2(-61440.0) & 0xff).isEqualTo(0xfc);
    assertThat(FloatFormats.toFloat8E5M2(Double.NaN) & 0x7f).as("NaN").isGreaterThan(0x7c);
  }
}

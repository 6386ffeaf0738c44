package dev.loramerge.internal.numeric;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.internal.linalg.Randoms;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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

  @Test
  void bulkConversionsGiveTheScalarBitsWithAndWithoutTheVectorApi() {
    assertThat(FloatFormats.VECTOR_API).as("surefire's argLine adds jdk.incubator.vector; without it this tests one path").isTrue();
    SplittableRandom random = new SplittableRandom(8);
    // Every fp16/bf16 bit pattern, and random float bits with an odd count for a scalar tail.
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
      for (boolean vectorized : new boolean[] {true, false}) {
        float[] widened = new float[count];
        FloatFormats.widen(float16, readOnly, widened, vectorized);
        ByteBuffer narrowed = ByteBuffer.allocate(count * 2).order(ByteOrder.LITTLE_ENDIAN);
        FloatFormats.narrow(float16, floats, narrowed, vectorized);
        for (int i = 0; i < count; i++) {
          int bits = i & 0xffff;
          float expected = float16 ? FloatFormats.float16Value(bits) : FloatFormats.fromBFloat16(bits);
          assertThat(Float.floatToRawIntBits(widened[i]))
              .as("%s bits 0x%04x widened, vectorized %s", format, bits, vectorized)
              .isEqualTo(Float.floatToRawIntBits(expected));
          short rounded = float16 ? FloatFormats.toFloat16(floats[i]) : FloatFormats.toBFloat16(floats[i]);
          assertThat(narrowed.getShort(i * 2))
              .as("%s of %s (bits 0x%08x), vectorized %s", format, floats[i], Float.floatToRawIntBits(floats[i]), vectorized)
              .isEqualTo(rounded);
        }
      }
    }
  }

  @Test
  void bulkNarrowingOfDoublesRoundsOnceWithAndWithoutTheVectorApi() {
    SplittableRandom random = new SplittableRandom(9);
    // Around every 97th midpoint of each format, the midpoint itself and doubles a little either
    // side, which float32 rounds onto it (the double rounding the bulk path has to undo); fp16's
    // subnormals and overflow boundary; random magnitudes; and an odd count for a scalar tail.
    double[] values = new double[3 * 0x10000 / 97 * 2 * 5 + 1001];
    int count = 0;
    for (boolean float16 : new boolean[] {true, false}) {
      for (int bits = 0; bits < 0x7bff; bits += 97) {
        double low = float16 ? FloatFormats.fromFloat16(bits) : FloatFormats.fromBFloat16(bits);
        double high = float16 ? FloatFormats.fromFloat16(bits + 1) : FloatFormats.fromBFloat16(bits + 1);
        double middle = (low + high) / 2;
        double nudge = Math.ulp(middle) * 64;
        for (double value : new double[] {middle, middle + nudge, middle - nudge, -(middle + nudge), low}) {
          values[count++] = value;
        }
      }
    }
    for (double value : new double[] {65520, Math.nextDown(65520.0), 65520 - 1e-9, 65519.99, 1e-8, -3e-6, 0, -0.0}) {
      values[count++] = value;
    }
    while (count < values.length) {
      values[count++] = Randoms.standardNormal(random) * Math.scalb(1.0, random.nextInt(-30, 18));
    }
    for (boolean float16 : new boolean[] {true, false}) {
      String format = float16 ? "fp16" : "bf16";
      for (boolean vectorized : new boolean[] {true, false}) {
        ByteBuffer narrowed = ByteBuffer.allocate(values.length * 2).order(ByteOrder.LITTLE_ENDIAN);
        FloatFormats.narrow(float16, values, narrowed, vectorized);
        for (int i = 0; i < values.length; i++) {
          short rounded = float16 ? FloatFormats.toFloat16(values[i]) : FloatFormats.toBFloat16(values[i]);
          assertThat(narrowed.getShort(i * 2))
              .as("%s of %s, vectorized %s", format, values[i], vectorized)
              .isEqualTo(rounded);
        }
      }
    }
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
}

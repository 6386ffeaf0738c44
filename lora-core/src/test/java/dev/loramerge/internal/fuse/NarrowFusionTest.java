package dev.loramerge.internal.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDManager;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.internal.numeric.FloatFormats;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The float32 fast path of fusing into fp16 and bf16 against a float64 reference rounded once:
 * every element must be identical, including the ones the fast path has to hand back to float64.
 * fp16 into fp16 and bf16 into bf16 are tested on both paths, scalar and Vector API.
 */
class NarrowFusionTest {
  @Test
  void theVectorApiIsThereForTheseTests() {
    assertThat(NarrowFusion.VECTOR_API)
        .as("lora-core's tests run with --add-modules jdk.incubator.vector on a CPU with 8-float vectors;"
            + " without it the Vector API path goes untested")
        .isTrue();
  }

  @ParameterizedTest(name = "{0} into {1}, {2}x{3}, vectorized {4}, down scale {5}")
  @CsvSource({
    "F16, F16, 67, 300, false, 0.1",
    "F16, F16, 67, 300, true, 0.1",
    "F16, F16, 200, 4096, false, 0.1",
    "F16, F16, 200, 4096, true, 0.1",
    "F16, F16, 200, 4096, true, 30",
    "BF16, BF16, 200, 4096, false, 0.1",
    "BF16, BF16, 200, 4096, true, 0.1",
    "BF16, BF16, 200, 4096, true, 30",
    "BF16, BF16, 13, 1001, true, 0.1",
    "F32, F16, 90, 1000, false, 0.1",
    "F32, BF16, 90, 1000, false, 0.1",
    "F16, BF16, 31, 777, false, 0.1"
  })
  void everyElementIsTheExactSumRoundedOnce(
      DType input, DType output, int rows, int cols, boolean vectorized, double downScale) {
    SplittableRandom random = new SplittableRandom(rows * 31L + cols);
    int rank = 32;
    double[] weight = new double[rows * cols];
    for (int i = 0; i < weight.length; i++) {
      // Mostly weight-like values, with fp16 subnormals, zeros and larger values mixed in.
      int kind = random.nextInt(20);
      double value = kind == 0 ? 0 : kind == 1 ? random.nextDouble(-1e-4, 1e-4) : kind == 2 ? random.nextDouble(-300, 300) : gaussian(random) * 0.05;
      weight[i] = roundTo(value, input);
    }
    // Updates of the same size at any down scale; a large one gives column norms far above 1,
    // where a bound that left them out would be too small.
    double[] up = gaussians(random, rows * rank, 0.002 / downScale);
    double[] down = gaussians(random, rank * cols, downScale);

    short[] actual = fuse(input, output, weight, up, down, rows, cols, vectorized);

    int mismatches = 0;
    int firstMismatch = -1;
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < cols; c++) {
        double exact = weight[r * cols + c];
        double update = 0;
        for (int l = 0; l < rank; l++) {
          update += up[r * rank + l] * down[l * cols + c];
        }
        short expected = round(exact + update, output);
        if (expected != actual[r * cols + c]) {
          mismatches++;
          firstMismatch = firstMismatch < 0 ? r * cols + c : firstMismatch;
        }
      }
    }
    assertThat(mismatches)
        .as("elements of %d not equal to the float64 sum rounded once (first at %d)", weight.length, firstMismatch)
        .isZero();
  }

  @ParameterizedTest(name = "vectorized {0}")
  @CsvSource({"false", "true"})
  void sumsOnAndNearRoundingBoundariesRoundFromTheExactValue(boolean vectorized) {
    // Rank-1 updates of 2⁻¹¹ (half an fp16 ulp of 1) nudged by amounts float32 cannot see; on 1
    // and on 1 + 2⁻¹⁰ (whose ties go opposite ways), and just below 2 where the ulp changes.
    double[] nudges = {0, Math.scalb(1.0, -30), -Math.scalb(1.0, -30), Math.scalb(1.0, -40), -Math.scalb(1.0, -45)};
    double[] bases = {1, 1 + Math.scalb(1.0, -10), -1, 2 - Math.scalb(1.0, -10), 2};
    // One column: on the vector path every element is a row's tail, so the 25 go out as 25 columns too.
    int count = nudges.length * bases.length;
    double[] weight = new double[count];
    double[] up = new double[count];
    for (int b = 0; b < bases.length; b++) {
      for (int n = 0; n < nudges.length; n++) {
        weight[b * nudges.length + n] = bases[b];
        up[b * nudges.length + n] = Math.copySign(Math.scalb(1.0, bases[b] >= 2 ? -10 : -11), bases[b]) + nudges[n];
      }
    }
    short[] byRows = fuse(DType.F16, DType.F16, weight, up, new double[] {1}, count, 1, vectorized);
    short[] asColumns = fuse(DType.F16, DType.F16, weight, new double[] {1}, up, 1, count, vectorized);
    for (int i = 0; i < count; i++) {
      short expected = FloatFormats.toFloat16(weight[i] + up[i]);
      assertThat(byRows[i]).as("element %d: %s + %s, one per row", i, weight[i], up[i]).isEqualTo(expected);
      assertThat(asColumns[i]).as("element %d: %s + %s, one row", i, weight[i], up[i]).isEqualTo(expected);
    }
  }

  @ParameterizedTest(name = "vectorized {0}")
  @CsvSource({"false", "true"})
  void anInfiniteFloat16WeightIsNamedEvenWhenTheUpdateWouldBringItBackInRange(boolean vectorized) {
    // Read as a finite number, fp16 infinity's bits are 65536; an update of -65000 would then make
    // a sum that rounds without complaint.
    double[] weight = new double[64];
    Arrays.fill(weight, 0.5);
    weight[37] = Double.POSITIVE_INFINITY;
    double[] down = new double[64];
    down[37] = -65000;
    assertThatThrownBy(() -> fuse(DType.F16, DType.F16, weight, new double[] {1}, down, 1, 64, vectorized))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("layer: fused value Infinity at element 37 is not a number; the base weight or the update holds NaN or infinity");
  }

  @ParameterizedTest(name = "{0}, vectorized {1}")
  @CsvSource({"F16, false", "F16, true", "BF16, false", "BF16, true"})
  void theFirstOverflowInAWideRowIsNamed(DType dtype, boolean vectorized) {
    double[] weight = new double[96];
    Arrays.fill(weight, 1);
    double[] down = new double[96];
    double huge = dtype == DType.F16 ? 1e5 : 1e39;
    down[50] = huge;
    down[70] = huge;
    assertThatThrownBy(() -> fuse(dtype, dtype, weight, new double[] {1}, down, 1, 96, vectorized))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageStartingWith("layer: fused value " + (1 + huge) + " at element 50 is beyond the range of " + dtype.safetensorsName());
  }

  @Test
  void theVectorDotProductAddsInTheScalarLoopsOrder() {
    SplittableRandom random = new SplittableRandom(21);
    for (int length : new int[] {1, 3, 4, 5, 8, 31, 32, 33, 64, 67}) {
      // Magnitudes spread over 2⁻²⁰…2²⁰, so that another order of additions rounds differently.
      double[] a = new double[length + 2];
      double[] b = new double[length + 5];
      for (int i = 0; i < a.length; i++) {
        a[i] = random.nextGaussian() * Math.scalb(1.0, random.nextInt(-20, 20));
      }
      for (int i = 0; i < b.length; i++) {
        b[i] = random.nextGaussian() * Math.scalb(1.0, random.nextInt(-20, 20));
      }
      double[] sums = new double[4];
      for (int l = 0; l < length; l++) {
        int lane = l < length - length % 4 ? l % 4 : 0;
        sums[lane] += a[2 + l] * b[5 + l];
      }
      double expected = (sums[0] + sums[1]) + (sums[2] + sums[3]);
      assertThat(VectorRounding.dot(a, 2, b, 5, length)).as("length %d", length).isEqualTo(expected);
    }
  }

  @Test
  void overflowNamesTheElement() {
    double[] weight = {1, 65504, 2};
    assertThatThrownBy(() -> fuse(DType.F16, DType.F16, weight, new double[] {1, 1, 1}, new double[] {100}, 3, 1))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("layer: fused value 65604.0 at element 1 is beyond the range of F16; lower the weights or the scale");
  }

  @Test
  void notANumberNamesTheElement() {
    double[] weight = {1, 2, Double.NaN, 3};
    assertThatThrownBy(() -> fuse(DType.BF16, DType.BF16, weight, new double[] {1, 1}, new double[] {1, 1}, 2, 2))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("at element 2 is not a number");
  }

  /**
   * Rows whose float64 sum depends on the order of the additions and lands on a tie of the narrow
   * format in one order and just above it in others: exactUpdate's order (product l into partial
   * sum l mod 4, the products past the last whole group of four into sum 0, then (s0 + s1) + (s2 +
   * s3)) gives the tie, rounded to the even 1.0, in rows 0–2. gpu/kernels/loramerge_cuda.cu's
   * fuseProduct repeats that order so that the GPU writes the host's bytes; a change here must be
   * made there too ({@code bin/lora-bench check} compares the two on these rows).
   */
  @ParameterizedTest(name = "{0}, vectorized {1}")
  @CsvSource({"F16, false", "F16, true", "BF16, false", "BF16, true"})
  void theFloat64SumIsAddedUpInTheOrderTheCudaKernelRepeats(DType dtype, boolean vectorized) {
    double big = 0x1p40;
    double small = 0x1p-40;
    double tie = dtype == DType.F16 ? 1 + 0x1p-11 : 1 + 0x1p-8;
    double[][] rows = {
      {big, tie, -big, small, 0, 0, 0}, // in sequence: tie + small
      {big, -big, tie, 0, 0, 0, small}, // product 6 in sum 2 rather than 0: tie + small
      {small, big, tie, -big, 0, 0, 0}, // (s0 + s2) + (s1 + s3): tie + small
      {tie, 0, 0, 0, 0, 0, small}, // tie + small in every order
    };
    int rank = 7;
    int cols = 8;
    double[] up = Arrays.stream(rows).flatMapToDouble(Arrays::stream).toArray();
    double[] down = new double[rank * cols];
    Arrays.fill(down, 1);
    short[] fused = fuse(dtype, dtype, new double[rows.length * cols], up, down, rows.length, cols, vectorized);
    double above = dtype == DType.F16 ? 1 + 0x1p-10 : 1 + 0x1p-7;
    for (int i = 0; i < fused.length; i++) {
      double value = dtype == DType.F16 ? FloatFormats.fromFloat16(fused[i]) : FloatFormats.fromBFloat16(fused[i]);
      assertThat(value).as("row %d, column %d of %s", i / cols, i % cols, dtype).isEqualTo(i / cols < 3 ? 1.0 : above);
    }
  }

  private static short[] fuse(DType input, DType output, double[] weight, double[] up, double[] down, int rows, int cols) {
    return fuse(input, output, weight, up, down, rows, cols, false);
  }

  private static short[] fuse(
      DType input, DType output, double[] weight, double[] up, double[] down, int rows, int cols, boolean vectorized) {
    ByteBuffer bytes = ByteBuffer.allocateDirect(weight.length * input.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < weight.length; i++) {
      if (input == DType.F32) {
        bytes.putFloat(i * 4, (float) weight[i]);
      } else {
        bytes.putShort(i * 2, round(weight[i], input));
      }
    }
    try (NDManager manager = NDManager.newBaseManager()) {
      ByteBuffer fused = input.byteSize() == 2 ? bytes : ByteBuffer.allocateDirect(weight.length * 2);
      NarrowFusion.fuse(new FuseScratch(), () -> manager, bytes, input, rows, up, down, up.length / rows, fused, output, "layer", vectorized);
      short[] result = new short[weight.length];
      fused.duplicate().order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(result);
      return result;
    }
  }

  private static short round(double value, DType dtype) {
    return dtype == DType.F16 ? FloatFormats.toFloat16(value) : FloatFormats.toBFloat16(value);
  }

  private static double roundTo(double value, DType dtype) {
    switch (dtype) {
      case F32:
        return (float) value;
      case F16:
        return FloatFormats.fromFloat16(FloatFormats.toFloat16(value));
      default:
        return FloatFormats.fromBFloat16(FloatFormats.toBFloat16(value));
    }
  }

  private static double[] gaussians(SplittableRandom random, int count, double scale) {
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = gaussian(random) * scale;
    }
    return values;
  }

  private static double gaussian(SplittableRandom random) {
    double u = random.nextDouble();
    double v = random.nextDouble();
    return Math.sqrt(-2 * Math.log1p(-u)) * Math.cos(2 * Math.PI * v);
  }
}

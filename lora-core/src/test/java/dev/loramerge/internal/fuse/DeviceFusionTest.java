package dev.loramerge.internal.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorData;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ForkJoinPool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The device kernel run by libtorch on the CPU: the same bytes as the host kernel, ties of the
 * narrow formats rounded from the float64 sum, nothing written when a value is not finite.
 */
class DeviceFusionTest {
  private static final long[][] SHAPES = {{256, 512}, {8, 4, 3, 3}, {320, 1}};

  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F64", "F32", "F16"})
  void writesTheHostKernelsBytes(DType dtype) {
    Random random = new Random(17);
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      for (long[] shape : SHAPES) {
        int rank = 4;
        int rows = Math.toIntExact(shape[0]);
        int numel = Math.toIntExact(Arrays.stream(shape).reduce(1, Math::multiplyExact));
        double[] up = gaussian(random, rows * rank, 0.05);
        double[] down = gaussian(random, rank * (numel / rows), 0.05);
        ByteBuffer base = TensorData.ofDoubles(gaussian(random, numel, 0.5), dtype, shape).bytes();
        ByteBuffer expected = ByteBuffer.allocate(base.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        Fusion.fuse(new FuseScratch(), () -> manager, base.duplicate(), dtype, shape, up, down, rank, expected, dtype, "host");

        NDArray weight = manager.create(base.duplicate(), new Shape(shape), Fusion.dataTypeOf(dtype));
        int before = manager.getManagedArrays().size();
        DeviceFusion.fuse(weight, weight, up, down, rank, "device");
        assertThat(bytes(weight)).as("%s %s fused on the device", dtype, Arrays.toString(shape)).isEqualTo(expected.rewind());
        assertThat(manager.getManagedArrays().size()).as("arrays alive after the fuse").isEqualTo(before);
      }
    }
  }

  /**
   * Sums that land on an fp16 tie in float32 but not in float64, on both sides, and the exact
   * ties, which round to even: rank 1 with a down factor of 1, so that each element's float64 sum
   * is {@code w + up} and its exact value is known. Checked against rounding done with BigDecimal
   * against the list of every fp16 value.
   */
  @Test
  void roundsFloat16TiesFromTheFloat64Sum() {
    Random random = new Random(23);
    int count = 4000;
    double[] weights = new double[count];
    double[] up = new double[count];
    double[] ties = new double[count];
    for (int i = 0; i < count; i++) {
      // A tie between two fp16 neighbours, across binades and in the subnormal range.
      double low = Float16Values.value(random.nextInt(0x7bff) | (random.nextBoolean() ? 0x8000 : 0));
      double high = Float16Values.next(low);
      double tie = (low + high) / 2;
      double nudge = switch (i % 4) {
        case 0 -> 0;
        case 1 -> Math.ulp(tie) * 4;
        case 2 -> -Math.ulp(tie) * 4;
        default -> Math.ulp(tie) * (random.nextInt(1 << 20) - (1 << 19));
      };
      // Of the tie's sign and no larger, so that the float64 sum w + up is exactly tie + nudge.
      weights[i] = Float16Values.nearest(new BigDecimal(Math.copySign(Float16Values.value(random.nextInt(0x3c00)) * tie, tie)));
      up[i] = tie + nudge - weights[i];
      ties[i] = tie;
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray weight = manager.create(TensorData.ofDoubles(weights, DType.F16, count, 1).bytes(), new Shape(count, 1), Fusion.dataTypeOf(DType.F16));
      DeviceFusion.fuse(weight, weight, up, new double[] {1.0}, 1, "ties");
      ByteBuffer fused = bytes(weight);
      int floatTies = 0;
      int twiceRoundedWrong = 0;
      for (int i = 0; i < count; i++) {
        BigDecimal exact = new BigDecimal(weights[i]).add(new BigDecimal(up[i]));
        double expected = Float16Values.nearest(exact);
        double actual = Float16Values.value(fused.getShort(i * 2) & 0xffff);
        float single = (float) (weights[i] + up[i]);
        floatTies += single == (float) ties[i] ? 1 : 0;
        twiceRoundedWrong += Float16Values.nearest(new BigDecimal(single)) != expected ? 1 : 0;
        assertThat(actual).as("element %d: %s + %s = %s", i, weights[i], up[i], exact.toPlainString()).isEqualTo(expected);
      }
      assertThat(floatTies).as("sums whose float32 value is a tie").isGreaterThan(count / 2);
      assertThat(twiceRoundedWrong).as("sums that rounding through float32 gets wrong").isGreaterThan(count / 8);
    }
  }

  @Test
  void refusesAnOverflowAndLeavesTheWeight() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      ByteBuffer base = TensorData.ofDoubles(new double[] {1, 60000}, DType.F16, 1, 2).bytes();
      NDArray weight = manager.create(base.duplicate(), new Shape(1, 2), Fusion.dataTypeOf(DType.F16));
      assertThatThrownBy(() -> DeviceFusion.fuse(weight, weight, new double[] {8000}, new double[] {0, 1}, 1, "module 'x'"))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("module 'x': fused value 68000.0 at element 1 is beyond the range of F16; lower the weights or the scale");
      assertThat(bytes(weight)).as("the weight after the refused fuse").isEqualTo(base.rewind());
    }
  }

  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F32", "F16"})
  void refusesNotANumber(DType dtype) {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      ByteBuffer base = TensorData.ofDoubles(new double[] {1, 2, 3}, dtype, 3, 1).bytes();
      NDArray weight = manager.create(base.duplicate(), new Shape(3, 1), Fusion.dataTypeOf(dtype));
      assertThatThrownBy(() -> DeviceFusion.fuse(weight, weight, new double[] {0, 0, Double.NaN}, new double[] {1}, 1, "module 'y'"))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageStartingWith("module 'y': fused value NaN at element 2 is not a number");
      assertThat(bytes(weight)).as("the weight after the refused fuse").isEqualTo(base.rewind());
    }
  }

  @Test
  void startsFromAnotherArray() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray original = manager.create(new float[] {1, 2, 3, 4}, new Shape(2, 2));
      NDArray weight = manager.create(new float[] {9, 9, 9, 9}, new Shape(2, 2));
      DeviceFusion.fuse(original, weight, new double[] {1, 2}, new double[] {0.5, 0.25}, 1, "w");
      assertThat(weight.toFloatArray()).as("original + up·down").containsExactly(1.5f, 2.25f, 4f, 4.5f);
      assertThat(original.toFloatArray()).as("the source").containsExactly(1f, 2f, 3f, 4f);
    }
  }

  /**
   * Many weights of mixed shapes, dtypes and ranks in one call, some starting from an array in
   * another manager (an original kept elsewhere): each gets the host kernel's bytes for its own
   * factors, as if fused alone, and no array outlives the call.
   */
  @Test
  void fusesABatchLikeOneWeightAtATime() {
    fusesLikeOneWeightAtATime(ForkJoinPool.commonPool());
  }

  /** A replay that undoes another fuse may run after the workers of the fuse it replays are shut down. */
  @Test
  void fusesOnTheCommonPoolWhenTheWorkersAreShutDown() {
    ForkJoinPool workers = new ForkJoinPool(2);
    workers.shutdown();
    fusesLikeOneWeightAtATime(workers);
  }

  private static void fusesLikeOneWeightAtATime(ForkJoinPool workers) {
    Random random = new Random(29);
    long[][] shapes = {{64, 96}, {32, 8, 3, 3}, {64, 96}, {48, 1}, {64, 96}, {32, 8, 3, 3}};
    DType[] dtypes = {DType.F16, DType.F32, DType.F16, DType.F64, DType.F32, DType.F32};
    int[] ranks = {4, 3, 7, 2, 5, 1};
    try (NDManager manager = NDManager.newBaseManager(Device.cpu());
        NDManager elsewhere = NDManager.newBaseManager(Device.cpu())) {
      List<DeviceFusion.Job> jobs = new ArrayList<>();
      List<ByteBuffer> expected = new ArrayList<>();
      List<NDArray> weights = new ArrayList<>();
      for (int i = 0; i < shapes.length; i++) {
        long[] shape = shapes[i];
        int rows = Math.toIntExact(shape[0]);
        int numel = Math.toIntExact(Arrays.stream(shape).reduce(1, Math::multiplyExact));
        double[] up = gaussian(random, rows * ranks[i], 0.05);
        double[] down = gaussian(random, ranks[i] * (numel / rows), 0.05);
        ByteBuffer base = TensorData.ofDoubles(gaussian(random, numel, 0.5), dtypes[i], shape).bytes();
        ByteBuffer into = ByteBuffer.allocate(base.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        Fusion.fuse(new FuseScratch(), () -> manager, base.duplicate(), dtypes[i], shape, up, down, ranks[i], into, dtypes[i], "host");
        expected.add(into.rewind());
        NDArray weight = manager.create(base.duplicate(), new Shape(shape), Fusion.dataTypeOf(dtypes[i]));
        NDArray source = i % 2 == 0 ? weight : elsewhere.create(base.duplicate(), new Shape(shape), Fusion.dataTypeOf(dtypes[i]));
        if (source != weight) {
          weight.set(new NDIndex("..."), 7);
        }
        DeviceFusion.Factors factors = new DeviceFusion.Factors(up, down, ranks[i]);
        jobs.add(new DeviceFusion.Job(source, weight, () -> factors, "weight " + i));
        weights.add(weight);
      }
      int before = manager.getManagedArrays().size();
      int beforeElsewhere = elsewhere.getManagedArrays().size();
      DeviceFusion.fuseAll(jobs, workers);
      for (int i = 0; i < shapes.length; i++) {
        assertThat(bytes(weights.get(i))).as("weight %d, %s %s rank %d", i, dtypes[i], Arrays.toString(shapes[i]), ranks[i])
            .isEqualTo(expected.get(i));
      }
      assertThat(manager.getManagedArrays().size()).as("arrays alive after the batch").isEqualTo(before);
      assertThat(elsewhere.getManagedArrays().size()).as("arrays alive in the sources' manager").isEqualTo(beforeElsewhere);
    }
  }

  @Test
  void batchesWeightsOfOneDeviceDtypeAndShapeUpToTheLimit() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      List<DeviceFusion.Job> jobs = new ArrayList<>();
      String[] kinds = {"a", "b", "a", "a", "c", "a", "b"};
      for (int i = 0; i < kinds.length; i++) {
        NDArray weight = switch (kinds[i]) {
          case "a" -> manager.zeros(new Shape(4, 5), DataType.FLOAT16);
          case "b" -> manager.zeros(new Shape(4, 5), DataType.FLOAT32);
          default -> manager.zeros(new Shape(5, 4), DataType.FLOAT16);
        };
        jobs.add(new DeviceFusion.Job(weight, weight, () -> null, kinds[i] + i));
      }
      List<List<String>> batches = DeviceFusion.batches(jobs, 40).stream()
          .map(batch -> batch.stream().map(DeviceFusion.Job::label).toList())
          .toList();
      assertThat(batches).as("batches of at most 40 elements (two 4×5 weights), groups in order of their first weight")
          .containsExactly(List.of("a0", "a2"), List.of("a3", "a5"), List.of("b1", "b6"), List.of("c4"));
      assertThat(DeviceFusion.batches(jobs.subList(0, 1), 7)).as("a weight larger than the limit is a batch of its own").hasSize(1);
    }
  }

  /** A failing weight in the second batch: the first batch is fused, the second left as it was. */
  @Test
  void refusesABatchWithAnOverflowAndNamesItsWeight() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      ByteBuffer small = TensorData.ofDoubles(new double[] {1, 2}, DType.F16, 1, 2).bytes();
      ByteBuffer large = TensorData.ofDoubles(new double[] {1, 60000}, DType.F16, 1, 2).bytes();
      NDArray first = manager.create(small.duplicate(), new Shape(1, 2), DataType.FLOAT16);
      NDArray fine = manager.create(small.duplicate(), new Shape(2, 1), DataType.FLOAT16);
      NDArray overflowing = manager.create(large.duplicate(), new Shape(2, 1), DataType.FLOAT16);
      DeviceFusion.Factors column = new DeviceFusion.Factors(new double[] {0, 8000}, new double[] {1}, 1);
      List<DeviceFusion.Job> jobs = List.of(
          new DeviceFusion.Job(first, first, () -> new DeviceFusion.Factors(new double[] {1}, new double[] {1, 1}, 1), "first"),
          new DeviceFusion.Job(fine, fine, () -> new DeviceFusion.Factors(new double[] {1, 0}, new double[] {1}, 1), "fine"),
          new DeviceFusion.Job(overflowing, overflowing, () -> column, "module 'z'"));
      assertThatThrownBy(() -> DeviceFusion.fuseAll(jobs, ForkJoinPool.commonPool()))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("module 'z': fused value 68000.0 at element 1 is beyond the range of F16; lower the weights or the scale");
      assertThat(first.toType(DataType.FLOAT32, false).toFloatArray()).as("the first batch, fused").containsExactly(2f, 3f);
      assertThat(bytes(fine)).as("the failing batch's other weight").isEqualTo(small.rewind());
      assertThat(bytes(overflowing)).as("the failing weight").isEqualTo(large.rewind());
    }
  }

  /**
   * The next batch's factors are asked for while a batch is fused: a failure to form them is
   * thrown after the batch before it is fused, and a failure of that batch wins over it, as when
   * the batches run one after the other.
   */
  @Test
  void reportsFailuresInTheOrderOfTheBatches() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      ByteBuffer small = TensorData.ofDoubles(new double[] {1, 2}, DType.F16, 1, 2).bytes();
      ByteBuffer large = TensorData.ofDoubles(new double[] {1, 60000}, DType.F16, 1, 2).bytes();
      NDArray fused = manager.create(small.duplicate(), new Shape(1, 2), DataType.FLOAT16);
      NDArray next = manager.create(small.duplicate(), new Shape(2, 1), DataType.FLOAT16);
      DeviceFusion.Job badFactors = new DeviceFusion.Job(
          next, next, () -> new DeviceFusion.Factors(new double[] {1}, new double[] {1}, 1), "module 'bad'");
      DeviceFusion.Job fine = new DeviceFusion.Job(
          fused, fused, () -> new DeviceFusion.Factors(new double[] {1}, new double[] {1, 1}, 1), "module 'fine'");
      assertThatThrownBy(() -> DeviceFusion.fuseAll(List.of(fine, badFactors), ForkJoinPool.commonPool()))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessageStartingWith("module 'bad': factors of 1 and 1 values do not make a rank-1 update");
      assertThat(fused.toType(DataType.FLOAT32, false).toFloatArray()).as("the batch before the failing one, fused").containsExactly(2f, 3f);
      assertThat(bytes(next)).as("the weight whose factors failed").isEqualTo(small.rewind());

      NDArray overflowing = manager.create(large.duplicate(), new Shape(1, 2), DataType.FLOAT16);
      DeviceFusion.Job overflow = new DeviceFusion.Job(
          overflowing, overflowing, () -> new DeviceFusion.Factors(new double[] {1}, new double[] {0, 8000}, 1), "module 'z'");
      assertThatThrownBy(() -> DeviceFusion.fuseAll(List.of(overflow, badFactors), ForkJoinPool.commonPool()))
          .as("the first batch's overflow, not the second batch's factors")
          .isInstanceOf(LoraMergeException.class)
          .hasMessageStartingWith("module 'z': fused value 68000.0");
    }
  }

  /**
   * Factors sent as stored (fp16 and float32 terms, coefficients, a factor other than 1) give the
   * bytes of the float64 factors formed on the host the way the cat does (each up widened, times
   * its coefficient, times the factor, rounded once each): batches of terms alike, and a batch
   * whose jobs differ in layout, which falls back to the float64 factors.
   */
  @Test
  void formsStoredFactorsOnTheDeviceAsTheHostDoes() {
    fusesStoredFactorsAsTheHostDoes(48, 40, new int[] {3, 5});
  }

  /** The same with a batch of stored factors large enough for the workers to copy it. */
  @Test
  void formsLargeBatchesOfStoredFactorsAsTheHostDoes() {
    int rows = 448;
    int cols = 400;
    int[] ranks = {48, 80};
    long batchBytes = 3L * (rows + cols) * (ranks[0] * DType.F16.byteSize() + ranks[1] * DType.F32.byteSize());
    assertThat(batchBytes).as("the first batch's stored factors").isGreaterThanOrEqualTo(DeviceFusion.PARALLEL_COPY_BYTES);
    fusesStoredFactorsAsTheHostDoes(rows, cols, ranks);
  }

  private static void fusesStoredFactorsAsTheHostDoes(int rows, int cols, int[] twoTermRanks) {
    Random random = new Random(31);
    double factor = -0.8;
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      List<DeviceFusion.Job> byTerms = new ArrayList<>();
      List<DeviceFusion.Job> byFactors = new ArrayList<>();
      List<NDArray> termWeights = new ArrayList<>();
      List<NDArray> factorWeights = new ArrayList<>();
      for (int i = 0; i < 5; i++) {
        // Job 3 has one term only: its batch is not alike and takes the float64 factors.
        int[] ranks = i == 3 ? new int[] {twoTermRanks[0]} : twoTermRanks;
        DType[] types = {DType.F16, DType.F32};
        List<DeviceFusion.Term> terms = new ArrayList<>();
        int rank = java.util.Arrays.stream(ranks).sum();
        double[] up = new double[rows * rank];
        List<double[]> downs = new ArrayList<>();
        int column = 0;
        for (int t = 0; t < ranks.length; t++) {
          TensorData termUp = TensorData.ofDoubles(gaussian(random, rows * ranks[t], 0.1), types[t], rows, ranks[t]);
          TensorData termDown = TensorData.ofDoubles(gaussian(random, ranks[t] * cols, 0.1), types[t], ranks[t], cols, 1, 1);
          double coefficient = 0.7 * (t + 1) / ranks[t];
          terms.add(new DeviceFusion.Term(termUp, termDown, ranks[t], coefficient, termUp));
          double[] stored = termUp.toDoubleArray();
          for (int row = 0; row < rows; row++) {
            for (int l = 0; l < ranks[t]; l++) {
              up[row * rank + column + l] = stored[row * ranks[t] + l] * coefficient * factor;
            }
          }
          downs.add(termDown.toDoubleArray());
          column += ranks[t];
        }
        double[] down = downs.stream().flatMapToDouble(java.util.Arrays::stream).toArray();
        ByteBuffer base = TensorData.ofDoubles(gaussian(random, rows * cols, 0.5), DType.F16, rows, cols).bytes();
        NDArray termWeight = manager.create(base.duplicate(), new Shape(rows, cols), DataType.FLOAT16);
        NDArray factorWeight = manager.create(base.duplicate(), new Shape(rows, cols), DataType.FLOAT16);
        termWeights.add(termWeight);
        factorWeights.add(factorWeight);
        DeviceFusion.Factors factors = new DeviceFusion.Factors(up, down, rank);
        DeviceFusion.Terms stored = new DeviceFusion.Terms(List.copyOf(terms), factor);
        byTerms.add(new DeviceFusion.Job(termWeight, termWeight, () -> factors, () -> java.util.Optional.of(stored), "terms " + i));
        byFactors.add(new DeviceFusion.Job(factorWeight, factorWeight, () -> factors, "factors " + i));
      }
      int before = manager.getManagedArrays().size();
      DeviceFusion.fuseAll(byTerms.subList(0, 3), ForkJoinPool.commonPool());
      DeviceFusion.fuseAll(byTerms.subList(3, 5), ForkJoinPool.commonPool());
      DeviceFusion.fuseAll(byFactors, ForkJoinPool.commonPool());
      for (int i = 0; i < termWeights.size(); i++) {
        assertThat(bytes(termWeights.get(i))).as("weight %d fused from stored factors", i).isEqualTo(bytes(factorWeights.get(i)));
      }
      assertThat(bytes(termWeights.get(0))).as("a fuse that changed the weight")
          .isNotEqualTo(TensorData.ofDoubles(new double[rows * cols], DType.F16, rows, cols).bytes());
      assertThat(manager.getManagedArrays().size()).as("arrays alive after the fuses").isEqualTo(before);
    }
  }

  private static ByteBuffer bytes(NDArray array) {
    return array.toByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
  }

  private static double[] gaussian(Random random, int count, double sigma) {
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = random.nextGaussian() * sigma;
    }
    return values;
  }

  /** Every finite fp16 value, decoded from its bits with the format's definition, for reference rounding. */
  private static final class Float16Values {
    private static final double[] ASCENDING = ascending();

    private static double[] ascending() {
      double[] values = new double[2 * 0x7c00 - 1];
      int n = 0;
      for (int bits = 0xfbff; bits > 0x8000; bits--) {
        values[n++] = value(bits);
      }
      for (int bits = 0; bits < 0x7c00; bits++) {
        values[n++] = value(bits);
      }
      return values;
    }

    static double value(int bits) {
      int exponent = (bits >> 10) & 0x1f;
      int fraction = bits & 0x3ff;
      double magnitude = exponent == 0 ? fraction * 0x1p-24 : (1024 + fraction) * Math.scalb(1.0, exponent - 25);
      return (bits & 0x8000) != 0 ? -magnitude : magnitude;
    }

    static double next(double value) {
      int index = Arrays.binarySearch(ASCENDING, value);
      return ASCENDING[index + 1];
    }

    /** The fp16 value nearest {@code exact}, ties to the even bit pattern (finite range only). */
    static double nearest(BigDecimal exact) {
      int index = Arrays.binarySearch(ASCENDING, exact.doubleValue());
      int above = index >= 0 ? index : -index - 1;
      if (above == 0 || above == ASCENDING.length) {
        throw new IllegalArgumentException("out of the fp16 range: " + exact);
      }
      // doubleValue() may have rounded onto a neighbour: compare the exact distances.
      int lower = Math.max(0, above - 2);
      double best = ASCENDING[lower];
      BigDecimal bestDistance = exact.subtract(new BigDecimal(best)).abs();
      for (int i = lower + 1; i <= Math.min(ASCENDING.length - 1, above + 1); i++) {
        BigDecimal distance = exact.subtract(new BigDecimal(ASCENDING[i])).abs();
        int order = distance.compareTo(bestDistance);
        if (order < 0 || (order == 0 && (bitsOf(ASCENDING[i]) & 1) == 0)) {
          best = ASCENDING[i];
          bestDistance = distance;
        }
      }
      return best;
    }

    private static int bitsOf(double value) {
      int index = Arrays.binarySearch(ASCENDING, value);
      int zero = Arrays.binarySearch(ASCENDING, 0.0);
      return index >= zero ? index - zero : 0x8000 | (zero - index);
    }
  }
}

package dev.loramerge.internal.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import java.util.concurrent.ForkJoinPool;
import org.junit.jupiter.api.Test;

/**
 * Factors kept on the device between fuses: found by the identity of what they come from, evicted least
 * recently used first but never while the fuse that looked them up runs, and giving the bytes of a
 * fuse that copies every factor over, whatever the coefficients of the fuse that reads them.
 */
class FactorCacheTest {
  private static final int ENTRY_BYTES = 400;

  @Test
  void findsEntriesByTheIdentityOfTheirOrigins() {
    FactorCache cache = FactorCache.withBudget(10 * ENTRY_BYTES);
    TensorData up = tensor(1);
    TensorData down = tensor(2);
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray weight = manager.zeros(new Shape(4, 4));
      cache.startFuse();
      assertThat(cache.store(key(up, down), ENTRY_BYTES, weight, FactorCacheTest::factors)).as("a new entry").isPresent();
      assertThat(cache.find(key(up, down))).as("the same origins, a new key").isPresent();
      assertThat(cache.find(key(tensor(1), tensor(2)))).as("equal origins, other instances").isEmpty();
      assertThat(cache.find(key(down, up))).as("the same origins in another order").isEmpty();
      assertThat(cache.store(key(up, down), ENTRY_BYTES, weight, FactorCacheTest::factors)).as("a second entry for a key").isEmpty();
      assertThat(cache.bytes()).isEqualTo(ENTRY_BYTES);
      cache.clear();
      assertThat(cache.find(key(up, down))).as("after clear()").isEmpty();
      assertThat(cache.bytes()).isZero();
    }
  }

  @Test
  void evictsTheLeastRecentlyUsedButNothingTheRunningFuseLookedUp() {
    FactorCache cache = FactorCache.withBudget(2 * ENTRY_BYTES);
    List<TensorData> tensors = new ArrayList<>();
    for (int i = 0; i < 8; i++) {
      tensors.add(tensor(i));
    }
    FactorCache.Key a = key(tensors.get(0), tensors.get(1));
    FactorCache.Key b = key(tensors.get(2), tensors.get(3));
    FactorCache.Key c = key(tensors.get(4), tensors.get(5));
    FactorCache.Key d = key(tensors.get(6), tensors.get(7));
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray weight = manager.zeros(new Shape(4, 4));
      int alive = manager.getManagedArrays().size();
      cache.startFuse();
      cache.store(a, ENTRY_BYTES, weight, FactorCacheTest::factors);
      cache.store(b, ENTRY_BYTES, weight, FactorCacheTest::factors);
      assertThat(cache.store(c, ENTRY_BYTES, weight, FactorCacheTest::factors))
          .as("a third entry while the fuse that stored two runs").isEmpty();

      cache.startFuse();
      assertThat(cache.find(a)).isPresent();
      assertThat(cache.store(c, ENTRY_BYTES, weight, FactorCacheTest::factors)).as("c, evicting b").isPresent();
      assertThat(cache.find(b)).as("b, used longest ago").isEmpty();
      assertThat(cache.find(a)).as("a, looked up by this fuse").isPresent();
      assertThat(cache.store(d, ENTRY_BYTES, weight, FactorCacheTest::factors)).as("d while a and c are this fuse's").isEmpty();
      assertThat(manager.getManagedArrays().size()).as("arrays of two entries").isEqualTo(alive + 4);

      cache.startFuse();
      assertThat(cache.store(d, 3 * ENTRY_BYTES, weight, FactorCacheTest::factors)).as("an entry over the budget").isEmpty();
      assertThat(cache.find(c)).as("c, untouched by a refused entry").isPresent();
      cache.discard(c);
      assertThat(cache.find(c)).as("c discarded").isEmpty();
      cache.clear();
      assertThat(manager.getManagedArrays().size()).as("arrays alive after clear()").isEqualTo(alive);
    }
  }

  @Test
  void dropsEntriesWhoseWeightsManagerWasClosed() {
    FactorCache cache = FactorCache.withBudget(ENTRY_BYTES);
    FactorCache.Key key = key(tensor(1), tensor(2));
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      cache.startFuse();
      cache.store(key, ENTRY_BYTES, manager.zeros(new Shape(2)), FactorCacheTest::factors);
    }
    assertThat(cache.find(key)).as("an entry under a closed manager").isEmpty();
    assertThat(cache.bytes()).isZero();
  }

  @Test
  void keepsNothingWithoutABudget() {
    assertThat(FactorCache.none().enabled()).isFalse();
    assertThat(FactorCache.withBudget(0).enabled()).isFalse();
    assertThatThrownBy(() -> FactorCache.withBudget(-1)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-1");
  }

  /**
   * Stored factors kept by the first fuse and read by the next ones, each with coefficients of its
   * own: the bytes of fuses that copy every factor over, and a budget that holds some batches only
   * changes nothing either.
   */
  @Test
  void fusesKeptFactorsToTheBytesOfCopiedOnes() {
    int rank = 4;
    Random random = new Random(5);
    // Two batches, of three 48×40 and three 40×48 weights.
    List<long[]> shapes = new ArrayList<>();
    List<TensorData> ups = new ArrayList<>();
    List<TensorData> downs = new ArrayList<>();
    List<ByteBuffer> bases = new ArrayList<>();
    for (int i = 0; i < 6; i++) {
      long[] shape = i < 3 ? new long[] {48, 40} : new long[] {40, 48};
      shapes.add(shape);
      ups.add(TensorData.ofDoubles(gaussian(random, (int) shape[0] * rank, 0.2), DType.F16, shape[0], rank));
      downs.add(TensorData.ofDoubles(gaussian(random, rank * (int) shape[1], 0.2), DType.F32, rank, shape[1]));
      bases.add(TensorData.ofDoubles(gaussian(random, (int) (shape[0] * shape[1]), 0.5), DType.F16, shape).bytes());
    }
    long firstBatch = 3L * (48 * rank * 2 + rank * 40 * 4);
    long secondBatch = 3L * (40 * rank * 2 + rank * 48 * 4);
    for (long budget : new long[] {1L << 20, secondBatch}) {
      FactorCache cache = FactorCache.withBudget(budget);
      try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
        List<NDArray> kept = weights(manager, bases, shapes);
        List<NDArray> copied = weights(manager, bases, shapes);
        int alive = manager.getManagedArrays().size();
        for (double coefficient : new double[] {0.7, -1.9, 0.3}) {
          DeviceFusion.fuseAll(jobs(kept, ups, downs, coefficient), ForkJoinPool.commonPool(), cache);
          DeviceFusion.fuseAll(jobs(copied, ups, downs, coefficient), ForkJoinPool.commonPool());
          for (int i = 0; i < kept.size(); i++) {
            assertThat(bytes(kept.get(i)))
                .as("weight %d with factors kept in a budget of %d bytes, coefficient %s", i, budget, coefficient)
                .isEqualTo(bytes(copied.get(i)));
          }
        }
        // Each batch kept once and found again; in the smaller budget the first batch keeps its
        // place, since every fuse looks it up before the second asks for room.
        assertThat(cache.bytes()).as("bytes kept in a budget of %d", budget)
            .isEqualTo(budget == secondBatch ? firstBatch : firstBatch + secondBatch);
        assertThat(manager.getManagedArrays().size()).as("arrays alive: the kept factors' only").isGreaterThan(alive);
        cache.clear();
        assertThat(manager.getManagedArrays().size()).as("arrays alive after clear()").isEqualTo(alive);
      }
    }
  }

  private static List<DeviceFusion.Job> jobs(List<NDArray> weights, List<TensorData> ups, List<TensorData> downs, double coefficient) {
    List<DeviceFusion.Job> jobs = new ArrayList<>();
    for (int i = 0; i < weights.size(); i++) {
      NDArray weight = weights.get(i);
      int rank = Math.toIntExact(ups.get(i).shape()[1]);
      DeviceFusion.Terms terms = new DeviceFusion.Terms(
          List.of(new DeviceFusion.Term(ups.get(i), downs.get(i), rank, coefficient * (i + 1), ups.get(i))), 0.9);
      jobs.add(new DeviceFusion.Job(weight, weight, () -> {
        throw new AssertionError("float64 factors asked for a batch of stored ones");
      }, () -> Optional.of(terms), "weight " + i));
    }
    return jobs;
  }

  private static List<NDArray> weights(NDManager manager, List<ByteBuffer> bases, List<long[]> shapes) {
    List<NDArray> weights = new ArrayList<>();
    for (int i = 0; i < bases.size(); i++) {
      weights.add(manager.create(bases.get(i).duplicate(), new Shape(shapes.get(i)), DataType.FLOAT16));
    }
    return weights;
  }

  private static List<List<NDArray>> factors(NDManager manager) {
    return List.of(List.of(manager.zeros(new Shape(1, 2, 3))), List.of(manager.zeros(new Shape(1, 3, 2))));
  }

  private static FactorCache.Key key(TensorData... tensors) {
    return new FactorCache.Key(Device.cpu(), List.of(tensors));
  }

  private static TensorData tensor(int seed) {
    return TensorData.ofDoubles(gaussian(new Random(seed), 6, 1), DType.F32, 2, 3);
  }

  private static ByteBuffer bytes(NDArray array) {
    return array.toByteBuffer();
  }

  private static double[] gaussian(Random random, int count, double sigma) {
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = random.nextGaussian() * sigma;
    }
    return values;
  }
}

package dev.loramerge.fuse;

import static dev.loramerge.fuse.FusedLoraTest.arrays;
import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.synthetic.SyntheticLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

/**
 * Fuses and unfuses from several threads at once: into one target, which serialises them, and
 * into targets of their own, which share the process's caches.
 */
class ConcurrentFuseTest {
  /**
   * SD 1.5's first self-attention of the second down block: four fp16 640×640 weights, each more
   * than one block of the fp16 fusion, so that a fuse takes long enough for others to overlap it.
   */
  private static final Predicate<ModuleSpec> ATTENTION =
      spec -> spec.key().path().startsWith("down_blocks.1.attentions.0.transformer_blocks.0.attn1.");

  private static final Map<String, TensorData> BASE = base();
  private static final ExecutorService THREADS = Executors.newFixedThreadPool(4);

  @AfterAll
  static void stopThreads() {
    THREADS.shutdownNow();
  }

  @Test
  void fusesAndUnfusesFromManyThreadsOnOneTargetLeaveEveryBitAsItWas() throws Exception {
    int threads = 4;
    int rounds = 8;
    List<LoraFuser> mergers = IntStream.range(0, threads).mapToObj(i -> merger(adapter(10 + i), 0.5 + 0.25 * i)).toList();
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, BASE);
      int arraysBefore = manager.getManagedArrays().size();
      WeightTarget target = WeightTarget.of(arrays);
      CyclicBarrier start = new CyclicBarrier(threads);
      List<Callable<Void>> tasks = new ArrayList<>();
      for (LoraFuser merger : mergers) {
        tasks.add(
            () -> {
              start.await();
              for (int round = 0; round < rounds; round++) {
                // Two fuses of one thread active at once, undone in alternating orders.
                FusedLora first = merger.fuseInto(target);
                FusedLora second = merger.fuseInto(target);
                (round % 2 == 0 ? first : second).unfuse();
                (round % 2 == 0 ? second : first).unfuse();
              }
              return null;
            });
      }
      for (Future<Void> task : THREADS.invokeAll(tasks, 5, TimeUnit.MINUTES)) {
        task.get();
      }
      assertThat(target.toString()).as("the target after every fuse is undone").contains("fused=0");
      assertThat(bytesOf(arrays))
          .as("weights after %d threads fused and unfused %d times each", threads, 2 * rounds)
          .isEqualTo(original());
      target.trim();
      assertThat(manager.getManagedArrays().size()).as("arrays alive in the weights' manager after trim()").isEqualTo(arraysBefore);
    }
  }

  @Test
  void twoFusesAtOnceGiveTheBytesOfOneOrderOrTheOther() throws Exception {
    LoraFuser style = merger(adapter(21), 0.9);
    LoraFuser detail = merger(adapter(22), -0.7);
    Map<String, ByteBuffer> styleFirst = serially(style, detail);
    Map<String, ByteBuffer> detailFirst = serially(detail, style);
    assertThat(styleFirst).as("the two orders' bytes, which the test tells apart").isNotEqualTo(detailFirst);
    for (int round = 0; round < 6; round++) {
      try (NDManager manager = NDManager.newBaseManager()) {
        Map<String, NDArray> arrays = arrays(manager, BASE);
        WeightTarget target = WeightTarget.of(arrays);
        List<FusedLora> fuses = atOnce(() -> style.fuseInto(target), () -> detail.fuseInto(target));
        assertThat(bytesOf(arrays))
            .as("weights after two fuses at once, round %d", round)
            .isIn(styleFirst, detailFirst);
        atOnce(
            () -> {
              fuses.get(0).unfuse();
              return null;
            },
            () -> {
              fuses.get(1).unfuse();
              return null;
            });
        assertThat(bytesOf(arrays)).as("weights after two unfuses at once, round %d", round).isEqualTo(original());
      }
    }
  }

  @Test
  void aFuseUnfusedFromTwoThreadsAtOnceIsUndoneOnce() throws Exception {
    LoraFuser style = merger(adapter(31), 0.8);
    LoraFuser detail = merger(adapter(32), 0.6);
    Map<String, ByteBuffer> detailOnly = serially(detail);
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, BASE);
      WeightTarget target = WeightTarget.of(arrays);
      FusedLora fused = style.fuseInto(target);
      detail.fuseInto(target);
      Callable<String> unfuse =
          () -> {
            try {
              fused.unfuse();
              return "undone";
            } catch (IllegalStateException e) {
              return e.getMessage();
            }
          };
      assertThat(atOnce(unfuse, unfuse))
          .as("what two threads unfusing one fuse at once get")
          .containsExactlyInAnyOrder("undone", "this fuse is already undone");
      assertThat(bytesOf(arrays)).as("weights with only the other fuse left").isEqualTo(detailOnly);
    }
  }

  @Test
  void fusesIntoTargetsOfTheirOwnAtOnceGiveTheBytesOfOneAtATime() throws Exception {
    LoraFuser merger = LoraFuser.of(LoraMerger.builder().add(adapter(41), 0.7).add(adapter(42), -0.4).build());
    Map<String, ByteBuffer> expected = serially(merger);
    int threads = 4;
    CyclicBarrier start = new CyclicBarrier(threads);
    List<Callable<Void>> tasks = new ArrayList<>();
    for (int thread = 0; thread < threads; thread++) {
      int id = thread;
      tasks.add(
          () -> {
            try (NDManager manager = NDManager.newBaseManager()) {
              Map<String, NDArray> arrays = arrays(manager, BASE);
              int arraysBefore = manager.getManagedArrays().size();
              WeightTarget target = WeightTarget.of(arrays);
              start.await();
              for (int round = 0; round < 5; round++) {
                FusedLora fused = merger.fuseInto(target);
                assertThat(bytesOf(arrays)).as("thread %d's weights fused, round %d", id, round).isEqualTo(expected);
                fused.unfuse();
                assertThat(bytesOf(arrays)).as("thread %d's weights unfused, round %d", id, round).isEqualTo(original());
              }
              target.trim();
              assertThat(manager.getManagedArrays().size())
                  .as("arrays alive in thread %d's manager after trim()", id)
                  .isEqualTo(arraysBefore);
            }
            return null;
          });
    }
    for (Future<Void> task : THREADS.invokeAll(tasks, 5, TimeUnit.MINUTES)) {
      task.get();
    }
  }

  private static Map<String, TensorData> base() {
    Map<String, TensorData> base = new LinkedHashMap<>();
    for (ModuleSpec spec : Architecture.sd15().modules().values()) {
      // One weight no adapter here touches, kept to check that fuses leave it alone.
      if (ATTENTION.test(spec) || spec.key().path().equals("down_blocks.1.attentions.0.proj_out")) {
        base.put(spec.key().path() + ".weight", SyntheticLora.baseWeight(spec, DType.F16, 5));
      }
    }
    return base;
  }

  private static LoraAdapter adapter(long seed) {
    return SyntheticLora.builder(Architecture.sd15()).modules(ATTENTION).rank(8).alpha(8).upScale(0.05).seed(seed).build();
  }

  private static LoraFuser merger(LoraAdapter adapter, double weight) {
    return LoraFuser.of(LoraMerger.builder().add(adapter, weight).build());
  }

  /** The weights after {@code mergers} fused in order, one at a time, into the base. */
  private static Map<String, ByteBuffer> serially(LoraFuser... mergers) throws IOException {
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, BASE);
      WeightTarget target = WeightTarget.of(arrays);
      for (LoraFuser merger : mergers) {
        merger.fuseInto(target);
      }
      return bytesOf(arrays);
    }
  }

  private static Map<String, ByteBuffer> original() {
    Map<String, ByteBuffer> original = new LinkedHashMap<>();
    BASE.forEach((name, tensor) -> original.put(name, tensor.bytes()));
    return original;
  }

  private static Map<String, ByteBuffer> bytesOf(Map<String, NDArray> arrays) {
    Map<String, ByteBuffer> bytes = new LinkedHashMap<>();
    arrays.forEach((name, array) -> bytes.put(name, FusedLoraTest.bytesOf(array)));
    return bytes;
  }

  /** The results of {@code first} and {@code second}, started together on two threads. */
  private static <T> List<T> atOnce(Callable<T> first, Callable<T> second) throws Exception {
    CyclicBarrier start = new CyclicBarrier(2);
    List<Callable<T>> tasks = new ArrayList<>();
    for (Callable<T> task : List.of(first, second)) {
      tasks.add(
          () -> {
            start.await();
            return task.call();
          });
    }
    List<T> results = new ArrayList<>();
    for (Future<T> result : THREADS.invokeAll(tasks, 1, TimeUnit.MINUTES)) {
      results.add(result.get());
    }
    return results;
  }
}

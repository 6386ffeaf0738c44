package dev.loramerge.internal.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.DoubleBuffer;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.concurrent.RejectedExecutionException;
import java.util.function.IntConsumer;
import java.util.function.Supplier;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Fusing where the weight lives: {@code W' = W + up·down} computed with libtorch's kernels on the
 * weight's device (a GPU, typically), rounded once from the float64 sum to the weight's dtype, and
 * written into the weight without its values ever leaving the device.
 *
 * <p>The bytes are those {@link Fusion} writes on the host. The sum is formed in float64 (the
 * product, then the weight added in place, which widens it exactly). float64 and float32 weights
 * take libtorch's cast, which rounds to nearest even. fp16 and bf16 do not: libtorch converts
 * float64 to them through float32, which rounds twice, and the second rounding is wrong exactly
 * where the float32 value {@code f} lies halfway between two neighbours of the narrow format while
 * the float64 sum does not. Such an {@code f} is found without bit manipulation: with {@code h}
 * the narrow value it rounds to, {@code f} is a tie exactly when {@code f ≠ h} and the reflection
 * {@code 2f − h} is itself a narrow value (two narrow values equally far on either side of {@code
 * f} are neighbours, since anything between them would be nearer). For those few elements the
 * float64 sum picks the side, and a float64 sum equal to {@code f} keeps libtorch's even choice.
 *
 * <p>Weights are fused in batches: those of one device, dtype and matrix shape, up to {@link
 * #BATCH_ELEMENTS} elements together, with their factors copied to the device in one array, one
 * batched product and every element-wise step done once for the batch. On a GPU each libtorch
 * call and each wait for the device costs about as much as the arithmetic of a small weight, so
 * the number of calls, not the elements, sets the time of a weight at a time. The bytes do not
 * depend on the batching: every step but the product is element-wise, and the product's float64
 * sums are rounded once whatever their order, as on the host. While the device computes a batch,
 * the workers ask for the next batch's factors and gather them in host memory, so that the host's
 * part of a fuse is hidden behind the device's.
 *
 * <p>Where the CUDA kernels are built and loaded ({@link CudaKernels}), a batch of fp16 or bf16
 * weights on a GPU is computed from its float64 factors in one kernel: the products in the host's
 * order, the sums, the rounding and the check in one pass, with no float64 product stored; a
 * batch gathered as its adapters' stored factors is copied over, formed into the float64 factors
 * and fused by kernels queued in one call, without waiting for the device: the next batch is
 * gathered and queued while it computes, where libtorch's path makes three synchronous copies and
 * a handful of operations per term first. Other weights are summed, rounded and checked in one
 * kernel after libtorch's product. The bytes are the same.
 *
 * <p>Before a batch is written, every rounded value is checked to be finite (by the device
 * itself for a queued batch); a NaN, an infinity or an overflow of the narrow format is reported
 * with the element's float64 value, and the batch's weights are left as they were.
 */
public final class DeviceFusion {
  private static final Logger log = LoggerFactory.getLogger(DeviceFusion.class);

  /**
   * Weight elements fused together at most (a single larger weight is a batch of its own), from
   * the system property {@code loramerge.device.batchElements} (default 2²⁵). On the device a
   * batch takes about 35 bytes an element while it is computed: 1.2 GB by default.
   */
  static final long BATCH_ELEMENTS = Math.max(1, Long.getLong("loramerge.device.batchElements", 1L << 25));

  /**
   * Stored factors of a batch copied into host memory by the workers from this many bytes on,
   * else on the gathering thread alone: from the system property {@code
   * loramerge.device.parallelCopyBytes} (default 2²⁴). A batch of SDXL's holds 2.3 MB on average;
   * on an H100 host the fuse took 0.051 s with those copied on one thread and 0.065 s with every
   * batch from 1 MiB handed to the workers, whose wake-ups cost more than the copy.
   */
  static final long PARALLEL_COPY_BYTES = Math.max(0, Long.getLong("loramerge.device.parallelCopyBytes", 1L << 24));

  /**
   * Batches whose factors are gathered while the device computes an earlier one, each on a thread
   * of its own: from the system property {@code loramerge.device.lookahead} (default 2). On an
   * H100 host the SDXL fuse took 0.050 s with 2 and 0.052 s with 1, hot-swap cycles 0.057 s and
   * 0.061 s: the host's copy of a batch's stored factors is longer than the device's part of it.
   */
  private static final int LOOKAHEAD = Math.max(1, Integer.getInteger("loramerge.device.lookahead", 2));

  /** The system property that, set to true, logs where a device fuse's time went (waiting for the device after each step). */
  public static final String PROFILE_PROPERTY = "loramerge.device.profile";

  /**
   * The system property that, set to true, copies every batch's float64 factors to the device
   * rather than the {@link Terms} it can form them from: the same bytes, for comparison.
   */
  public static final String FLOAT64_FACTORS_PROPERTY = "loramerge.device.float64Factors";

  private DeviceFusion() {}

  /** A rank-{@code rank} update: {@code up} m×r and {@code down} r×(numel/m), row-major float64. */
  public record Factors(double[] up, double[] down, int rank) {}

  /**
   * The factors of {@link Factors} in the form an adapter stores them: {@code up} is the terms'
   * ups side by side, each widened to float64, times its coefficient, then times {@code factor}
   * (each product rounded once, as on the host; a factor of 1 changes nothing), and {@code down}
   * the terms' downs stacked. The device forms them from the stored values, which for fp16
   * adapters are a quarter of the float64 factors' bytes to copy.
   */
  public record Terms(List<Term> terms, double factor) {}

  /**
   * One term of {@link Terms}: {@code up} m×r and {@code down} r×n as stored (any shape of those
   * sizes), and {@code origin}, an immutable object whose identity stands for their values (the
   * adapter's module), by which a {@link FactorCache} finds them.
   */
  public record Term(TensorData up, TensorData down, int rank, double coefficient, Object origin) {}

  /**
   * One weight to fuse: {@code weight} set to {@code source + up·down}. {@code source} has the
   * weight's shape; it may be the weight itself, another array on its device, or an array in host
   * memory, which is copied over first. The factors are asked for when the weight's batch is
   * computed (on the workers), so that only a batch's factors are ever in memory: as {@code
   * terms} when every job of the batch has them alike (the same terms' ranks and dtypes), else as
   * {@code factors}.
   */
  public record Job(NDArray source, NDArray weight, Supplier<Factors> factors, Supplier<Optional<Terms>> terms, String label) {
    /** A job whose factors come in float64 only. */
    public Job(NDArray source, NDArray weight, Supplier<Factors> factors, String label) {
      this(source, weight, factors, Optional::empty, label);
    }
  }

  /**
   * Sets {@code weight} to {@code source + up·down}, rounded once from the float64 sum to the
   * weight's dtype (F64, F32, F16 or BF16), computed on the weight's device: {@link #fuseAll} of
   * one job. Every array made on the way belongs to a sub-manager of the weight's manager that is
   * closed before this returns.
   *
   * @throws dev.loramerge.LoraMergeException naming {@code label} when a result is NaN, infinite
   *     or beyond the dtype's range; the weight is then unchanged
   */
  public static void fuse(NDArray source, NDArray weight, double[] up, double[] down, int rank, String label) {
    Factors factors = new Factors(up, down, rank);
    fuseAll(List.of(new Job(source, weight, () -> factors, label)), ForkJoinPool.commonPool());
  }

  /**
   * Fuses every job, in batches of weights with the same device, dtype and shape, the factors of
   * a batch computed on {@code workers} (on the common pool once they are shut down). Arrays made
   * on the way belong to sub-managers of the weights' managers, closed batch by batch.
   *
   * @throws dev.loramerge.LoraMergeException for the first weight of the first batch that has a
   *     result that is NaN, infinite or beyond the dtype's range, naming its job's label; that
   *     batch's weights are unchanged, those of earlier batches are fused, later ones untouched
   */
  public static void fuseAll(List<Job> jobs, ForkJoinPool workers) {
    fuseAll(jobs, workers, FactorCache.none());
  }

  /**
   * {@link #fuseAll(List, ForkJoinPool)}, reading the stored factors of batches that {@code
   * factors} keeps on the device from there, and keeping there those of others it has room for.
   */
  public static void fuseAll(List<Job> jobs, ForkJoinPool workers, FactorCache factors) {
    Phases phases = new Phases(Boolean.getBoolean(PROFILE_PROPERTY));
    List<List<Job>> batches = batches(jobs, BATCH_ELEMENTS);
    factors.startFuse();
    try (Run run = new Run(batches, workers, !Boolean.getBoolean(FLOAT64_FACTORS_PROPERTY), factors, phases)) {
      run.fuseBatches();
    }
    phases.log(jobs.size(), batches.size());
  }

  /**
   * One {@link #fuseAll}: its batches, the host buffers they are gathered in, and the batches
   * queued on a device and not yet waited for, with their flags there.
   *
   * <p>A batch the CUDA kernels fuse from its stored factors is queued and not waited for: the
   * host gathers and queues the next one while the device computes, and reads every batch's flag
   * once at the end (or before a batch that another path computes and writes synchronously). A
   * batch with a value that is not finite, and every batch queued after it, leaves its weights
   * unchanged on the device itself; the failure is then reported as libtorch's path reports it,
   * by computing that batch again there. The host buffers are {@link #LOOKAHEAD} + 2, used in
   * turn: a buffer is refilled only once the device has copied what it held before.
   */
  private static final class Run implements AutoCloseable {
    private final List<List<Job>> batches;
    private final ForkJoinPool workers;
    private final boolean stored;
    private final FactorCache cache;
    private final Phases phases;
    private final FactorBuffer[] buffers = Stream.generate(FactorBuffer::new).limit(LOOKAHEAD + 2).toArray(FactorBuffer[]::new);
    private final Map<Device, NDManager> flagManagers = new LinkedHashMap<>();
    private final Map<Device, NDArray> flags = new LinkedHashMap<>();
    private final BitSet queued = new BitSet();

    Run(List<List<Job>> batches, ForkJoinPool workers, boolean stored, FactorCache cache, Phases phases) {
      this.batches = batches;
      this.workers = workers;
      this.stored = stored;
      this.cache = cache;
      this.phases = phases;
    }

    /**
     * The batches fused one after the other, the next {@link #LOOKAHEAD} batches' factors gathered
     * meanwhile, each on a thread of its own: a batch's stored factors are copied on one thread
     * (handing a few megabytes to all the workers costs more in wake-ups than it saves), and more
     * than one batch gathered at once keeps up with a device faster than that copy.
     */
    void fuseBatches() {
      // Profiled, the steps run one after the other so that each one's time is its own.
      int ahead = phases.enabled ? 0 : LOOKAHEAD;
      List<CompletableFuture<Gathered>> gathering = new ArrayList<>(Collections.nCopies(batches.size(), null));
      try {
        for (int b = 0; b < batches.size(); b++) {
          for (int k = b + 1; k <= b + ahead && k < batches.size(); k++) {
            if (gathering.get(k) == null) {
              int batch = k;
              gathering.set(k, CompletableFuture.supplyAsync(() -> gather(batch), command -> submitted(workers, ForkJoinTask.adapt(command))));
            }
          }
          int index = b;
          CompletableFuture<Gathered> started = gathering.set(b, null);
          Gathered current = settledFirst(() -> started != null ? joined(started) : gather(index));
          settledFirst(() -> {
            fuse(current, index, true);
            return null;
          });
        }
        settle();
      } finally {
        // Gatherings still running write into buffers that closing unpins; a later batch's
        // failure is not reported where an earlier one failed.
        gathering.stream().filter(Objects::nonNull).forEach(started -> started.exceptionally(failure -> null).join());
      }
    }

    /**
     * {@code step}'s value; where it fails, the failure of a batch queued before it is thrown
     * instead, if there is one, since that batch came first.
     */
    private <T> T settledFirst(Supplier<T> step) {
      try {
        return step.get();
      } catch (RuntimeException failure) {
        try {
          settle();
        } catch (RuntimeException earlier) {
          earlier.addSuppressed(failure);
          throw earlier;
        }
        throw failure;
      }
    }

    private Gathered gather(int b) {
      return DeviceFusion.gather(batches.get(b), workers, buffers[b % buffers.length], stored, cache, phases);
    }

    /** The device's part of batch {@code b}: queued where the kernels take it, else computed and written after the queued ones are settled. */
    private void fuse(Gathered gathered, int b, boolean kernelsAllowed) {
      List<Job> batch = gathered.batch();
      NDArray first = batch.get(0).weight();
      Device device = first.getDevice();
      boolean kernels = kernelsAllowed && CudaKernels.available(device);
      try (NDManager scratch = first.getManager().newSubManager(device)) {
        List<NDArray> weights = batch.stream().map(Job::weight).toList();
        List<NDArray> sources = sources(batch, device, scratch);
        phases.mark("sources", null);
        if (kernels && gathered.stored().isPresent()
            && queuedFromTerms(scratch, gathered, sources, weights, flags(device, first), b, cache)) {
          queued.set(b);
          phases.mark("stored factors and product kernel", first);
          return;
        }
        settle();
        fuseGathered(scratch, gathered, sources, weights, kernels, cache, phases);
      }
    }

    /** The not-finite flags of the batches queued on {@code device}, all -1 at first: made with the first. */
    private NDArray flags(Device device, NDArray weight) {
      return flags.computeIfAbsent(device, key -> {
        NDManager manager = flagManagers.computeIfAbsent(device, d -> weight.getManager().newSubManager(d));
        return manager.full(new Shape(1 + batches.size()), -1, DataType.INT64);
      });
    }

    /**
     * Waits for the queued batches and throws for the first that had a value that is not finite,
     * as libtorch's path throws for it: naming the first such weight of the batch and the value.
     */
    void settle() {
      if (queued.isEmpty()) {
        return;
      }
      int failed = Integer.MAX_VALUE;
      for (NDArray deviceFlags : flags.values()) {
        // The copy to the host waits for everything queued before it.
        long[] values = deviceFlags.toLongArray();
        for (int b = queued.nextSetBit(0); b >= 0 && b < failed; b = queued.nextSetBit(b + 1)) {
          if (values[1 + b] != -1) {
            failed = b;
          }
        }
      }
      queued.clear();
      if (failed != Integer.MAX_VALUE) {
        throw reported(failed);
      }
    }

    /**
     * The failure of queued batch {@code b}, which left its weights unchanged, as libtorch's path
     * reports it. The batch is gathered again into a buffer of its own: the fuse's buffers may be
     * in use by the batches gathered ahead.
     */
    private RuntimeException reported(int b) {
      try (FactorBuffer own = new FactorBuffer()) {
        fuse(DeviceFusion.gather(batches.get(b), workers, own, stored, cache, phases), b, false);
      } catch (RuntimeException failure) {
        return failure;
      }
      return new IllegalStateException(
          batches.get(b).get(0).label() + ": the CUDA kernels found a value that is not finite in this batch; libtorch's path found none");
    }

    @Override
    public void close() {
      try {
        // The kernels leave a batch's copies into its weights queued, and the queued batches
        // everything; the fuse returns once they are done.
        batches.stream().map(batch -> batch.get(0).weight().getDevice()).distinct().forEach(CudaKernels::synchronize);
      } finally {
        flagManagers.values().forEach(NDManager::close);
        for (FactorBuffer buffer : buffers) {
          buffer.close();
        }
      }
    }
  }

  /** {@code task}'s value, computed on {@code workers}; its failure rethrown as it was thrown, not as a copy. */
  private static <T> T onWorkers(ForkJoinPool workers, Callable<T> task) {
    try {
      return submitted(workers, ForkJoinTask.adapt(task)).get();
    } catch (ExecutionException e) {
      throw rethrown(e.getCause());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while the factors were gathered", e);
    }
  }

  /**
   * {@code failure} as its thrower threw it: a fork-join task (a parallel stream's too) that
   * failed on another thread rethrows a copy of the same class, caused by the original, whose
   * message is the original's {@code toString()} or none.
   */
  private static RuntimeException rethrown(Throwable failure) {
    Throwable original = failure;
    while (original.getCause() != null
        && original.getCause().getClass() == original.getClass()
        && (original.getMessage() == null || original.getMessage().equals(original.getCause().toString()))) {
      original = original.getCause();
    }
    if (original instanceof RuntimeException runtime) {
      return runtime;
    }
    if (original instanceof Error error) {
      throw error;
    }
    return new IllegalStateException(original);
  }

  /**
   * {@code task} submitted to {@code workers}, or to the common pool where they are shut down: a
   * fuse replayed to undo another (from another thread) may still be running on the workers of a
   * fuse that ends meanwhile and shuts them down.
   */
  public static <T> ForkJoinTask<T> submitted(ForkJoinPool workers, ForkJoinTask<T> task) {
    try {
      return workers.submit(task);
    } catch (RejectedExecutionException e) {
      return ForkJoinPool.commonPool().submit(task);
    }
  }

  private static void onWorkers(ForkJoinPool workers, Runnable task) {
    onWorkers(workers, () -> {
      task.run();
      return null;
    });
  }

  /** The value of a completed gathering, its failure rethrown as it was thrown. */
  private static Gathered joined(CompletableFuture<Gathered> gathering) {
    try {
      return gathering.join();
    } catch (CompletionException e) {
      throw rethrown(e.getCause());
    }
  }


  /** The time of each step of a device fuse, summed over its batches, when profiled. */
  private static final class Phases {
    private final boolean enabled;
    private final Map<String, Long> nanos = new LinkedHashMap<>();
    private long last = System.nanoTime();

    Phases(boolean enabled) {
      this.enabled = enabled;
    }

    /** Ends step {@code name} once the device has computed {@code array} (null: a host step). */
    void mark(String name, NDArray array) {
      if (!enabled) {
        return;
      }
      if (array != null) {
        // One element back to the host: the device has then done everything queued before it.
        try (NDArray flat = array.flatten(); NDArray element = flat.get(0)) {
          element.toByteBuffer();
        }
      }
      long now = System.nanoTime();
      nanos.merge(name, now - last, Long::sum);
      last = now;
    }

    void log(int weights, int batches) {
      if (enabled) {
        StringBuilder steps = new StringBuilder();
        nanos.forEach((name, time) -> steps.append(String.format(Locale.ROOT, ", %s %.4f s", name, time / 1e9)));
        log.info("device fuse of {} weights in {} batches{}", weights, batches, steps);
      }
    }
  }

  /**
   * The host memory the factors of a batch are gathered in before their copy to the device, one
   * of those a fuse's batches use in turn: a fresh direct buffer per batch would be zeroed and
   * faulted in page by page each time, and freed only by a garbage collection, which the JVM forces
   * once direct memory runs short. The batch's arrays are closed before the buffer is refilled, so
   * it may also be the memory of an array libtorch made from it without a copy. Where the kernels
   * run, a queued copy from the buffer records {@link #copied}, and the buffer is refilled or freed
   * only once the device has passed it.
   */
  private static final class FactorBuffer implements AutoCloseable {
    private ByteBuffer buffer = ByteBuffer.allocateDirect(0);
    private boolean pinned;
    private long copied;

    /**
     * {@code bytes} of the buffer, grown first where needed; pinned where the CUDA kernels are
     * loaded and {@code device} is a GPU, since copies from pageable memory go through the
     * driver's staging buffers at a fraction of the bus's speed.
     */
    ByteBuffer take(long bytes, Device device) {
      checkArgument(bytes <= Integer.MAX_VALUE, "a batch of %s bytes of factors is too large for one buffer", bytes);
      CudaKernels.awaitEvent(copied);
      if (copied == 0) {
        copied = CudaKernels.newEvent(device);
      }
      if (buffer.capacity() < bytes) {
        unpin();
        buffer = ByteBuffer.allocateDirect((int) Math.min(Integer.MAX_VALUE, Math.max(bytes, buffer.capacity() * 3L / 2)));
        pinned = CudaKernels.pin(buffer, device);
      }
      return buffer.duplicate().clear().limit((int) bytes).slice().order(ByteOrder.nativeOrder());
    }

    /** The event a queued copy from this buffer records, or 0 where the kernels do not run. */
    long copied() {
      return copied;
    }

    private void unpin() {
      if (pinned) {
        CudaKernels.unpin(buffer);
        pinned = false;
      }
    }

    @Override
    public void close() {
      CudaKernels.awaitEvent(copied);
      unpin();
      CudaKernels.freeEvent(copied);
      copied = 0;
    }
  }

  /**
   * The jobs grouped by device, dtype and shape, in the order of each group's first job, each
   * group split into runs of at most {@code elements} weight elements (at least one job).
   */
  static List<List<Job>> batches(List<Job> jobs, long elements) {
    Map<List<Object>, List<Job>> groups = new LinkedHashMap<>();
    for (Job job : jobs) {
      NDArray weight = job.weight();
      checkArgument(
          job.source().getShape().equals(weight.getShape()),
          "%s: source of shape %s for a weight of shape %s", job.label(), job.source().getShape(), weight.getShape());
      groups.computeIfAbsent(List.of(weight.getDevice(), weight.getDataType(), weight.getShape()), key -> new ArrayList<>()).add(job);
    }
    List<List<Job>> batches = new ArrayList<>();
    for (List<Job> group : groups.values()) {
      long size = group.get(0).weight().size();
      int perBatch = (int) Math.max(1, Math.min(Integer.MAX_VALUE, elements / Math.max(1, size)));
      for (int first = 0; first < group.size(); first += perBatch) {
        batches.add(group.subList(first, Math.min(group.size(), first + perBatch)));
      }
    }
    return batches;
  }

  /**
   * A batch's factors gathered in host memory, ready for their copy to the device: as the jobs'
   * terms where they have them alike ({@code stored}), else as float64 factors of rank {@code
   * rank}; {@code copied} is the event a queued copy of {@code buffer} records (0 where the kernels
   * do not run).
   */
  private record Gathered(
      List<Job> batch, DType dtype, long rows, long cols, Optional<Stored> stored, ByteBuffer buffer, long copied, int rank) {}

  /**
   * A batch's terms as gathered: where each term's coefficients, ups and downs lie in the host
   * buffer ({@code starts}: every term's coefficients, then each term's ups and downs), the key of
   * its factors in the factor cache (empty where the cache keeps none), and the cache's entry for
   * them, in which case the host buffer holds only the coefficients.
   */
  private record Stored(List<Terms> terms, long[] starts, Optional<FactorCache.Key> key, Optional<FactorCache.Entry> kept) {
    /** {@code terms} laid out in a host buffer, each array at a cache line. */
    static Stored laidOut(List<Terms> terms, Optional<FactorCache.Key> key, Optional<FactorCache.Entry> kept) {
      List<Term> layout = terms.get(0).terms();
      int count = terms.size();
      long[] starts = new long[layout.size() * 3 + 1];
      for (int t = 0; t < layout.size(); t++) {
        starts[t + 1] = starts[t] + aligned((long) count * Double.BYTES);
      }
      for (int t = 0; t < layout.size(); t++) {
        int up = layout.size() + 2 * t;
        starts[up + 1] = starts[up] + aligned(count * layout.get(t).up().byteSize());
        starts[up + 2] = starts[up + 1] + aligned(count * layout.get(t).down().byteSize());
      }
      return new Stored(terms, starts, key, kept);
    }

    List<Term> layout() {
      return terms.get(0).terms();
    }

    double factor() {
      return terms.get(0).factor();
    }

    long coefficientsAt(int t) {
      return starts[t];
    }

    long upAt(int t) {
      return starts[layout().size() + 2 * t];
    }

    long downAt(int t) {
      return starts[layout().size() + 2 * t + 1];
    }

    long coefficientBytes() {
      return starts[layout().size()];
    }

    long bytes() {
      return starts[starts.length - 1];
    }

    /** The bytes of term {@code t}'s ups of every job. */
    long upBytes(int t) {
      return terms.size() * layout().get(t).up().byteSize();
    }

    /** The bytes of term {@code t}'s downs of every job. */
    long downBytes(int t) {
      return terms.size() * layout().get(t).down().byteSize();
    }

    /** The bytes of every job's stored factors. */
    long factorBytes() {
      return IntStream.range(0, layout().size()).mapToLong(t -> upBytes(t) + downBytes(t)).sum();
    }

    /** Term {@code t}'s ups of every job (count×rows×rank), as stored, from the host buffer. */
    NDArray upOf(NDManager manager, ByteBuffer buffer, int t, long rows) {
      Term term = layout().get(t);
      return array(manager, buffer, upAt(t), upBytes(t), new Shape(terms.size(), rows, term.rank()), term.up().dtype());
    }

    /** Term {@code t}'s downs of every job (count×rank×cols), as stored, from the host buffer. */
    NDArray downOf(NDManager manager, ByteBuffer buffer, int t, long cols) {
      Term term = layout().get(t);
      return array(manager, buffer, downAt(t), downBytes(t), new Shape(terms.size(), term.rank(), cols), term.down().dtype());
    }
  }

  /** The host's part of a batch: its jobs' factors asked for and copied into {@code factorBuffer}. */
  private static Gathered gather(
      List<Job> batch, ForkJoinPool workers, FactorBuffer factorBuffer, boolean stored, FactorCache cache, Phases phases) {
    NDArray first = batch.get(0).weight();
    DType dtype = Fusion.dtypeOf(first.getDataType(), batch.get(0).label());
    Shape shape = first.getShape();
    long rows = shape.dimension() == 0 ? 1 : shape.get(0);
    long cols = shape.size() / Math.max(1, rows);
    Device device = first.getDevice();
    Optional<List<Terms>> terms = stored ? alike(batch, rows, cols, device) : Optional.empty();
    if (terms.isPresent()) {
      phases.mark("terms", null);
      Gathered gathered = gatherTerms(batch, dtype, rows, cols, terms.get(), device, workers, factorBuffer, cache);
      phases.mark("gather", null);
      return gathered;
    }
    List<Factors> factors = onWorkers(workers, () -> batch.parallelStream().map(job -> checked(job, rows, cols)).toList());
    phases.mark("float64 factors", null);
    return gatherFactors(batch, dtype, rows, cols, factors, device, workers, factorBuffer);
  }

  /** The batch's sources on its weights' device: copies of those elsewhere belong to {@code scratch}. */
  private static List<NDArray> sources(List<Job> batch, Device device, NDManager scratch) {
    // The kernels read the sources through their addresses, whatever their shape.
    List<NDArray> sources = new ArrayList<>(batch.size());
    for (Job job : batch) {
      NDArray from = job.source();
      if (!from.getDevice().equals(device)) {
        from = from.toDevice(device, true);
        from.attach(scratch);
      }
      sources.add(from);
    }
    return sources;
  }

  /** A batch's factors copied to the device and its weights fused there, waiting for the device: every path but the queued one. */
  private static void fuseGathered(
      NDManager scratch, Gathered gathered, List<NDArray> sources, List<NDArray> weights, boolean kernels, FactorCache cache,
      Phases phases) {
    List<Job> batch = gathered.batch();
    NDArray first = batch.get(0).weight();
    DType dtype = gathered.dtype();
    Shape shape = first.getShape();
    long rows = gathered.rows();
    long cols = gathered.cols();
    NDList onDevice = gathered.stored().isPresent() ? termsOnDevice(scratch, gathered, cache) : factorsOnDevice(scratch, gathered);
    phases.mark("factors on the device", onDevice.get(1));
    if (kernels && CudaKernels.fuseProduct(scratch, onDevice.get(0), onDevice.get(1), sources, weights, dtype)) {
      phases.mark("product kernel", first);
      return;
    }
    NDArray sum = onDevice.get(0).batchMatMul(onDevice.get(1));
    phases.mark("product", sum);
    if (kernels && CudaKernels.fuse(scratch, sum, sources, weights, dtype)) {
      phases.mark("rounding kernel", first);
      return;
    }
    NDList matrices = new NDList(batch.size());
    for (NDArray from : sources) {
      // A view made from the caller's array belongs to the caller's manager until attached here.
      NDArray matrix = from.reshape(rows, cols);
      matrix.attach(scratch);
      matrices.add(matrix);
    }
    sum.addi(batch.size() == 1 ? matrices.get(0).expandDims(0) : NDArrays.stack(matrices));
    NDArray rounded;
    NDArray probe;
    if (dtype == DType.F64) {
      rounded = sum;
      probe = sum;
    } else if (dtype == DType.F32) {
      rounded = sum.toType(DataType.FLOAT32, false);
      probe = rounded;
    } else {
      NDArray single = sum.toType(DataType.FLOAT32, false);
      rounded = single.toType(first.getDataType(), false);
      // Exact: h is the narrow value nearest f, so f − h is a float32 value.
      probe = single.sub(rounded.toType(DataType.FLOAT32, false));
      correctTies(sum, single, rounded, probe);
    }
    checkFinite(batch, sum, probe, dtype);
    phases.mark("sum, rounding and check", null);
    for (int i = 0; i < batch.size(); i++) {
      NDArray weight = batch.get(i).weight();
      weight.set(new NDIndex("..."), rounded.get(i).reshape(shape));
    }
    phases.mark("write", first);
  }

  /**
   * {@link CudaKernels#queueTerms} of batch {@code b}, gathered as its terms; false where the
   * kernels leave it to another path. Factors the cache keeps are read where they are; factors it
   * has room for are copied into a new entry, the others into the scratch staging with the
   * coefficients.
   */
  private static boolean queuedFromTerms(
      NDManager scratch, Gathered gathered, List<NDArray> sources, List<NDArray> weights, NDArray flags, int b, FactorCache cache) {
    Stored stored = gathered.stored().orElseThrow();
    List<Term> layout = stored.layout();
    int count = weights.size();
    long rows = gathered.rows();
    long cols = gathered.cols();
    Optional<FactorCache.Entry> kept = stored.kept();
    Optional<FactorCache.Entry> fresh = Optional.empty();
    if (kept.isEmpty() && stored.key().isPresent()) {
      fresh = cache.store(stored.key().get(), stored.factorBytes(), weights.get(0),
          manager -> uninitialisedFactors(manager, layout, count, rows, cols));
      kept = fresh;
    }
    long staged = kept.isPresent() ? stored.coefficientBytes() : stored.bytes();
    NDArray staging = scratch.create(new Shape(Math.max(1, staged)), DataType.INT8);
    List<Long> hostOffsets = new ArrayList<>();
    List<CudaKernels.Region> uploads = new ArrayList<>();
    hostOffsets.add(0L);
    uploads.add(new CudaKernels.Region(staging, 0, staged));
    List<CudaKernels.Region> coefficients = new ArrayList<>();
    List<CudaKernels.Region> ups = new ArrayList<>();
    List<CudaKernels.Region> downs = new ArrayList<>();
    for (int t = 0; t < layout.size(); t++) {
      coefficients.add(new CudaKernels.Region(staging, stored.coefficientsAt(t), (long) count * Double.BYTES));
      if (kept.isPresent()) {
        ups.add(new CudaKernels.Region(kept.get().ups().get(t), 0, stored.upBytes(t)));
        downs.add(new CudaKernels.Region(kept.get().downs().get(t), 0, stored.downBytes(t)));
      } else {
        ups.add(new CudaKernels.Region(staging, stored.upAt(t), stored.upBytes(t)));
        downs.add(new CudaKernels.Region(staging, stored.downAt(t), stored.downBytes(t)));
      }
      if (fresh.isPresent()) {
        hostOffsets.add(stored.upAt(t));
        uploads.add(ups.get(t));
        hostOffsets.add(stored.downAt(t));
        uploads.add(downs.get(t));
      }
    }
    boolean queued = CudaKernels.queueTerms(
        scratch, gathered.buffer(), gathered.copied(), hostOffsets.stream().mapToLong(Long::longValue).toArray(), uploads,
        coefficients, ups, downs, layout.stream().mapToInt(Term::rank).toArray(),
        layout.stream().map(term -> term.up().dtype()).toArray(DType[]::new),
        layout.stream().map(term -> term.down().dtype()).toArray(DType[]::new), stored.factor(), rows, cols, sources, weights,
        gathered.dtype(), flags, b);
    if (!queued && fresh.isPresent()) {
      // Nothing was copied into it.
      cache.discard(stored.key().get());
    }
    return queued;
  }

  /** Arrays for a batch's stored factors, per term every job's ups (count×rows×rank) and downs (count×rank×cols), not yet written. */
  private static List<List<NDArray>> uninitialisedFactors(NDManager manager, List<Term> layout, int count, long rows, long cols) {
    List<NDArray> ups = new ArrayList<>(layout.size());
    List<NDArray> downs = new ArrayList<>(layout.size());
    for (Term term : layout) {
      ups.add(manager.create(new Shape(count, rows, term.rank()), Fusion.dataTypeOf(term.up().dtype())));
      downs.add(manager.create(new Shape(count, term.rank(), cols), Fusion.dataTypeOf(term.down().dtype())));
    }
    return List.of(ups, downs);
  }

  /**
   * The dtypes a term's factors may have on a device: those of libtorch's arrays, and bf16 only on
   * a GPU, where the project's JNI build reads it (gpu/patches; DJL's CPU build aborts on it).
   */
  private static final Set<DType> TERM_TYPES = Set.of(DType.F64, DType.F32, DType.F16);

  /**
   * The batch's terms, when every job has them, of the same ranks and dtypes, making updates of
   * an m×n weight; else empty.
   */
  private static Optional<List<Terms>> alike(List<Job> batch, long rows, long cols, Device device) {
    List<Terms> all = new ArrayList<>(batch.size());
    for (Job job : batch) {
      Optional<Terms> terms = job.terms().get();
      if (terms.isEmpty() || !all.isEmpty() && !sameLayout(all.get(0), terms.get())) {
        return Optional.empty();
      }
      for (Term term : terms.get().terms()) {
        if (term.up().numel() != rows * term.rank() || term.down().numel() != cols * term.rank()
            || !onDevice(term.up().dtype(), device) || !onDevice(term.down().dtype(), device)) {
          return Optional.empty();
        }
      }
      all.add(terms.get());
    }
    return Optional.of(all);
  }

  private static boolean onDevice(DType dtype, Device device) {
    return TERM_TYPES.contains(dtype) || dtype == DType.BF16 && device.isGpu();
  }

  private static boolean sameLayout(Terms first, Terms other) {
    if (first.terms().size() != other.terms().size()) {
      return false;
    }
    for (int t = 0; t < first.terms().size(); t++) {
      Term a = first.terms().get(t);
      Term b = other.terms().get(t);
      if (a.rank() != b.rank() || a.up().dtype() != b.up().dtype() || a.down().dtype() != b.down().dtype()) {
        return false;
      }
    }
    return true;
  }

  /**
   * The coefficients of a batch whose jobs have terms alike, in {@code factorBuffer}, and its
   * stored factors there too unless {@code cache} keeps them on the device.
   */
  private static Gathered gatherTerms(
      List<Job> jobs, DType dtype, long rows, long cols, List<Terms> batch, Device device, ForkJoinPool workers, FactorBuffer factorBuffer,
      FactorCache cache) {
    int count = batch.size();
    double factor = batch.get(0).factor();
    checkArgument(batch.stream().allMatch(terms -> terms.factor() == factor), "the terms of a batch have different factors");
    int terms = batch.get(0).terms().size();
    Optional<FactorCache.Key> key = cache.enabled() ? Optional.of(keyOf(batch, device)) : Optional.empty();
    Optional<FactorCache.Entry> kept = key.flatMap(cache::find);
    Stored stored = Stored.laidOut(batch, key, kept);
    long bytes = kept.isPresent() ? stored.coefficientBytes() : stored.bytes();
    ByteBuffer buffer = factorBuffer.take(bytes, device);
    for (int t = 0; t < terms; t++) {
      for (int i = 0; i < count; i++) {
        buffer.putDouble(Math.toIntExact(stored.coefficientsAt(t) + (long) i * Double.BYTES), batch.get(i).terms().get(t).coefficient());
      }
    }
    if (kept.isEmpty()) {
      IntConsumer copy = task -> {
        int i = task / terms;
        int t = task % terms;
        Term term = batch.get(i).terms().get(t);
        ByteBuffer into = buffer.duplicate();
        into.position(Math.toIntExact(stored.upAt(t) + i * term.up().byteSize())).put(term.up().bytes());
        into.position(Math.toIntExact(stored.downAt(t) + i * term.down().byteSize())).put(term.down().bytes());
      };
      // Handing a copy to the workers costs their wake-ups, which a small batch's copy does not repay.
      if (bytes < PARALLEL_COPY_BYTES) {
        IntStream.range(0, count * terms).forEach(copy);
      } else {
        onWorkers(workers, () -> IntStream.range(0, count * terms).parallel().forEach(copy));
      }
    }
    return new Gathered(jobs, dtype, rows, cols, Optional.of(stored), buffer, factorBuffer.copied(), 0);
  }

  /** The identity of a batch's stored factors on {@code device}: every job's terms' origins. */
  private static FactorCache.Key keyOf(List<Terms> batch, Device device) {
    List<Object> origins = new ArrayList<>();
    for (Terms terms : batch) {
      for (Term term : terms.terms()) {
        origins.add(term.origin());
      }
    }
    return new FactorCache.Key(device, origins);
  }

  /**
   * The float64 ups (b×m×r) and downs (b×r×n) of a batch whose jobs have terms alike, on the
   * scratch manager's device, from one copy of the stored factors and the coefficients to the
   * device (or of the coefficients alone, for factors the cache keeps there): the float64 factors
   * of {@link Terms} formed there, with the host's roundings.
   */
  private static NDList termsOnDevice(NDManager scratch, Gathered gathered, FactorCache cache) {
    Stored stored = gathered.stored().orElseThrow();
    int count = gathered.batch().size();
    double factor = stored.factor();
    List<Term> layout = stored.layout();
    ByteBuffer buffer = gathered.buffer();
    long rows = gathered.rows();
    long cols = gathered.cols();
    Optional<FactorCache.Entry> kept = stored.kept().or(() -> stored.key().flatMap(key -> cache.store(
        key, stored.factorBytes(), gathered.batch().get(0).weight(), manager -> copiedFactors(manager, gathered))));
    NDList ups = new NDList(layout.size());
    NDList downs = new NDList(layout.size());
    for (int t = 0; t < layout.size(); t++) {
      Term term = layout.get(t);
      NDArray coefficient = array(scratch, buffer, stored.coefficientsAt(t), (long) count * Double.BYTES, new Shape(count, 1, 1), DType.F64);
      NDArray up;
      NDArray down;
      if (kept.isPresent()) {
        // Copies: the result of an operation belongs to its array's manager, here the entry's.
        up = kept.get().ups().get(t).toType(DataType.FLOAT64, true);
        down = kept.get().downs().get(t).toType(DataType.FLOAT64, true);
        up.attach(scratch);
        down.attach(scratch);
      } else {
        up = stored.upOf(scratch, buffer, t, rows).toType(DataType.FLOAT64, false);
        down = stored.downOf(scratch, buffer, t, cols).toType(DataType.FLOAT64, false);
      }
      NDArray scaled = up.mul(coefficient);
      ups.add(factor == 1 ? scaled : scaled.mul(factor));
      downs.add(down);
    }
    return new NDList(ups.size() == 1 ? ups.get(0) : NDArrays.concat(ups, 2), downs.size() == 1 ? downs.get(0) : NDArrays.concat(downs, 1));
  }

  /**
   * A batch's stored factors in arrays of {@code manager}, copied from the host buffer: an array
   * made from a direct buffer on the CPU is that buffer's memory, which the next batch rewrites.
   */
  private static List<List<NDArray>> copiedFactors(NDManager manager, Gathered gathered) {
    Stored stored = gathered.stored().orElseThrow();
    List<NDArray> ups = new ArrayList<>();
    List<NDArray> downs = new ArrayList<>();
    for (int t = 0; t < stored.layout().size(); t++) {
      try (NDArray up = stored.upOf(manager, gathered.buffer(), t, gathered.rows());
          NDArray down = stored.downOf(manager, gathered.buffer(), t, gathered.cols())) {
        ups.add(up.duplicate());
        downs.add(down.duplicate());
      }
    }
    return List.of(ups, downs);
  }

  /** {@code bytes} rounded up to a whole cache line, where each array of a batch's factors starts. */
  private static long aligned(long bytes) {
    return (bytes + 63) & -64L;
  }

  /** The {@code bytes} at {@code at} in {@code buffer} as an array on the scratch manager's device. */
  private static NDArray array(NDManager scratch, ByteBuffer buffer, long at, long bytes, Shape shape, DType dtype) {
    ByteBuffer slice = buffer.duplicate().position(Math.toIntExact(at)).limit(Math.toIntExact(at + bytes)).slice().order(ByteOrder.LITTLE_ENDIAN);
    return scratch.create(slice, shape, Fusion.dataTypeOf(dtype));
  }

  /** {@code job}'s factors, checked to make a rank-r update of an m×n weight. */
  private static Factors checked(Job job, long rows, long cols) {
    Factors factors = job.factors().get();
    int rank = factors.rank();
    checkArgument(
        rank > 0 && factors.up().length == rows * rank && factors.down().length == cols * rank,
        "%s: factors of %s and %s values do not make a rank-%s update of %s elements in %s rows",
        job.label(), factors.up().length, factors.down().length, rank, rows * cols, rows);
    return factors;
  }

  /**
   * The float64 ups (b×m×r) and downs (b×r×n) of a batch on the scratch manager's device, from
   * one copy of every factor to the device, gathered in {@code factorBuffer}. Factors of a lower
   * rank than {@code rank} are padded with zeros, which add nothing to a float64 sum.
   */
  private static Gathered gatherFactors(
      List<Job> jobs, DType dtype, long rows, long cols, List<Factors> factors, Device device, ForkJoinPool workers, FactorBuffer factorBuffer) {
    int count = factors.size();
    int rank = factors.stream().mapToInt(Factors::rank).max().orElseThrow();
    long upValues = rows * rank;
    long downValues = cols * rank;
    long total = count * (upValues + downValues);
    ByteBuffer buffer = factorBuffer.take(total * Double.BYTES, device);
    int lowest = factors.stream().mapToInt(Factors::rank).min().orElseThrow();
    double[] zeros = new double[lowest == rank ? 0 : Math.toIntExact(Math.max(rank - lowest, (rank - lowest) * cols))];
    onWorkers(workers, () -> IntStream.range(0, count).parallel().forEach(i -> {
      DoubleBuffer values = buffer.asDoubleBuffer();
      Factors f = factors.get(i);
      int r = f.rank();
      int upAt = Math.toIntExact(i * upValues);
      int downAt = Math.toIntExact(count * upValues + i * downValues);
      values.put(downAt, f.down());
      if (r == rank) {
        values.put(upAt, f.up());
      } else {
        // The buffer holds an earlier batch's values: the padding is written, not assumed zero.
        for (int row = 0; row < rows; row++) {
          values.put(upAt + row * rank, f.up(), row * r, r);
          values.put(upAt + row * rank + r, zeros, 0, rank - r);
        }
        values.put(downAt + f.down().length, zeros, 0, (int) ((rank - r) * cols));
      }
    }));
    return new Gathered(jobs, dtype, rows, cols, Optional.empty(), buffer, factorBuffer.copied(), rank);
  }

  /** The float64 ups (b×m×r) and downs (b×r×n) of a batch on the scratch manager's device, from one copy of {@link #gatherFactors}'s buffer. */
  private static NDList factorsOnDevice(NDManager scratch, Gathered gathered) {
    int count = gathered.batch().size();
    long rows = gathered.rows();
    long cols = gathered.cols();
    int rank = gathered.rank();
    long upValues = rows * rank;
    long total = count * (upValues + cols * rank);
    NDArray all = scratch.create(gathered.buffer(), new Shape(total), DataType.FLOAT64);
    long split = count * upValues;
    return new NDList(all.get(new NDIndex("0:{}", split)).reshape(count, rows, rank), all.get(new NDIndex("{}:", split)).reshape(count, rank, cols));
  }

  /**
   * Rounds again, from the float64 {@code sum}, the elements whose float32 value {@code single} is
   * a tie of the narrow format; {@code below} is {@code single − rounded} in float32. Arrays made
   * here belong to {@code sum}'s manager.
   */
  private static void correctTies(NDArray sum, NDArray single, NDArray rounded, NDArray below) {
    NDArray mirrored = single.add(below);
    NDArray ties = mirrored.toType(rounded.getDataType(), false)
        .toType(DataType.FLOAT32, false)
        .eq(mirrored)
        .logicalAnd(below.neq(0));
    NDArray indices = ties.flatten().nonzero().flatten();
    if (indices.isEmpty()) {
      return;
    }
    NDArray exact = sum.flatten().take(indices);
    NDArray tie = single.flatten().take(indices);
    NDArray even = rounded.flatten().take(indices).toType(DataType.FLOAT32, false);
    NDArray odd = mirrored.flatten().take(indices);
    NDArray upward = NDArrays.where(exact.gt(tie), even.maximum(odd), even);
    NDArray chosen = NDArrays.where(exact.lt(tie), even.minimum(odd), upward);
    rounded.flatten().set(new NDIndex("{}", indices), chosen.toType(rounded.getDataType(), false));
  }

  /**
   * Throws for the first job of the batch with an element of {@code probe} that is not finite: the
   * rounded value itself, or for fp16 and bf16 the rounding's residue, which is infinite or NaN
   * exactly when the rounded value is.
   */
  private static void checkFinite(List<Job> batch, NDArray sum, NDArray probe, DType dtype) {
    double[] largest = probe.abs().reshape(batch.size(), -1).max(new int[] {1}).toType(DataType.FLOAT64, false).toDoubleArray();
    for (int i = 0; i < largest.length; i++) {
      if (!Double.isFinite(largest[i])) {
        NDArray flat = probe.get(i).flatten();
        long index = flat.isInfinite().logicalOr(flat.isNaN()).nonzero().getLong(0, 0);
        double value = sum.get(i).flatten().toType(DataType.FLOAT64, false).get(index).getDouble();
        throw Fusion.notRepresentable(batch.get(i).label(), value, index, dtype);
      }
    }
  }
}

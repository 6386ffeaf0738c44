package dev.loramerge.fuse;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorSpec;
import dev.loramerge.internal.fuse.DeviceCopies;
import dev.loramerge.internal.fuse.FactorCache;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.internal.linalg.NdArrays;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

/**
 * NDArrays updated in place, with a ledger that makes every fuse undoable bit for bit.
 *
 * <p>The first fuse that touches a weight keeps a copy of its original values in a native array
 * beside it (a libtorch array: no Java heap, no garbage collection). Undoing a fuse recomputes
 * each weight it touched from that original, re-applying the fuses still active in the order
 * they were made; fuses are deterministic, so the result is exactly what fusing only the
 * remaining updates would have given, and the original itself once none is left.
 *
 * <p>Once a weight is restored, its copy's memory is kept as a spare, and the next fuse that
 * touches the weight copies into it. Memory freed and allocated again may come back as fresh
 * pages, which the kernel clears on first touch with a page fault per 4 KiB: about a million for
 * the copies of an SDXL UNet's touched weights (4.4 GB), on every fuse that gets them. Spares are
 * kept only for copies that are written through their own views; {@link #trim} frees them.
 *
 * <p>Weights on a GPU are fused there by updates that can be ({@link DeviceUpdate}, which every
 * merger's update is): libtorch computes and rounds them on the device, their originals are kept
 * as device copies (or in host memory, as {@link Originals} says) and restored with copies, and
 * their values never travel. Weights on the CPU and laid out contiguously are computed in Java
 * straight into their own memory; others (views, or GPU weights with an update of another kind)
 * are computed in a heap buffer and set. Which is which is learnt from
 * the first fuse of each weight, by reading back a value it wrote: nothing but fused values and
 * restored originals is ever written into a weight, since another thread may be reading it.
 *
 * <p>{@link #apply}, the restorers and {@link #trim} hold the target's lock throughout, so fuses
 * and unfuses never interleave and the ledger stays consistent.
 */
final class ArrayTarget implements WeightTarget {
  /** Copies of restored weights, written through their views, for the next fuse to copy into. */
  private final SpareCopies spares;
  private final ImmutableMap<String, NDArray> arrays;
  private final ImmutableMap<String, TensorSpec> weights;
  private final Map<String, NDArray> originals = new HashMap<>();
  private final List<WeightUpdate> active = new ArrayList<>();
  /** Whether each weight's direct view is its own memory, once a fuse has found out. */
  private final Map<String, Boolean> writesThrough = new ConcurrentHashMap<>();
  private final Originals keptIn;
  /** Adapters' stored factors kept on the weights' devices between fuses. */
  private final FactorCache factors;
  /** Whether CPU arrays take the device path too, which tests use to run it without a GPU. */
  private final boolean libtorchOnCpu;

  /**
   * A target over {@code arrays}, keeping spares in {@code spares}.
   *
   * @throws IllegalArgumentException naming the arrays whose element type a fuse cannot write
   *     (anything but F64, F32, F16 and BF16)
   */
  ArrayTarget(
      ImmutableMap<String, NDArray> arrays, SpareCopies spares, Originals keptIn, FactorCache factors, boolean libtorchOnCpu) {
    this.arrays = arrays;
    this.spares = spares;
    this.keptIn = keptIn;
    this.factors = factors;
    this.libtorchOnCpu = libtorchOnCpu;
    ImmutableMap.Builder<String, TensorSpec> infos = ImmutableMap.builder();
    Map<String, DataType> unfusable = new LinkedHashMap<>();
    arrays.forEach(
        (name, array) -> {
          switch (array.getDataType()) {
            case FLOAT64, FLOAT32, FLOAT16, BFLOAT16 ->
                infos.put(name, new TensorSpec(name, Fusion.dtypeOf(array.getDataType(), name), array.getShape().getShape()));
            default -> unfusable.put(name, array.getDataType());
          }
        });
    if (!unfusable.isEmpty()) {
      throw new IllegalArgumentException(
          String.format(
              Locale.ROOT,
              "%d of %d arrays cannot be fused into (only F64, F32, F16 and BF16 can): %s; leave them out of the target",
              unfusable.size(), arrays.size(), unfusable));
    }
    this.weights = infos.build();
  }

  @Override
  public ImmutableMap<String, TensorSpec> weights() {
    return weights;
  }

  /**
   * Applies {@code update} to its weights. Those the update computes on their device go first,
   * all in one call ({@link DeviceUpdate#applyAllOnDevice}), which batches them. The others are
   * computed as many at a time as {@linkplain WeightUpdate#workers() its workers} have threads:
   * each weight's own preparation (its factors, the float64 bounds) is serial, and on a weight at
   * a time the other threads waited for it. Each weight is computed by itself, so the bytes do not
   * depend on the order; a failure on the host is reported for the first failing weight in order,
   * as one at a time would, and one on a device for the first failing weight of the first batch.
   * Either way every weight touched is restored before the failure is thrown.
   */
  @Override
  public synchronized Optional<Restorer> apply(WeightUpdate update) {
    List<String> names = new ArrayList<>(update.names());
    names.removeIf(name -> !weights.containsKey(name));
    for (String name : names) {
      long[] shape = update.outputShape(weights.get(name));
      if (!Arrays.equals(shape, weights.get(name).shape())) {
        // An NDArray's shape is fixed, and a target's callers hold the arrays themselves.
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "%s would be widened from %s to %s, and an in-memory target cannot change an array's shape; fuse"
                    + " into the model's file (SafetensorsWeights), or widen the array with zero columns first",
                update.describe(name), Arrays.toString(weights.get(name).shape()), Arrays.toString(shape)));
      }
    }
    Set<String> uncaptured = names.stream().filter(name -> !originals.containsKey(name)).collect(Collectors.toSet());
    Map<String, NDArray> reusable = new HashMap<>();
    for (String name : uncaptured) {
      NDArray spare = spares.take(arrays.get(name));
      if (spare != null && !spare.isReleased()) {
        reusable.put(name, spare);
      }
    }
    Map<String, NDArray> capturedNow = new ConcurrentHashMap<>();
    Set<String> touched = ConcurrentHashMap.newKeySet();
    long total = names.stream().mapToLong(name -> weights.get(name).byteSize()).sum();
    long[] done = {0};
    List<String> deviceNames = update instanceof DeviceUpdate device
        ? names.stream().filter(name -> onDevice(arrays.get(name)) && device.onDevice(weights.get(name))).toList()
        : List.of();
    if (!deviceNames.isEmpty()) {
      List<String> duplicated = new ArrayList<>();
      for (String name : deviceNames) {
        if (!uncaptured.contains(name)) {
          continue;
        }
        if (keepsOnDevice(arrays.get(name))) {
          duplicated.add(name);
        } else {
          capturedNow.put(name, copyOf(name, arrays.get(name)));
        }
      }
      List<NDArray> copies = DeviceCopies.duplicates(duplicated.stream().map(arrays::get).toList());
      for (int i = 0; i < duplicated.size(); i++) {
        capturedNow.put(duplicated.get(i), copies.get(i));
      }
      touched.addAll(deviceNames);
      try {
        ((DeviceUpdate) update).applyAllOnDevice(
            deviceNames.stream().map(weights::get).toList(), deviceNames.stream().map(arrays::get).toList(), factors);
      } catch (RuntimeException e) {
        throw undone(e, capturedNow, touched, reusable);
      }
      done[0] = deviceNames.stream().mapToLong(name -> weights.get(name).byteSize()).sum();
      update.progress(done[0], total);
    }
    Set<String> fusedOnDevice = Set.copyOf(deviceNames);
    List<String> onHost = names.stream().filter(name -> !fusedOnDevice.contains(name)).toList();
    AtomicInteger next = new AtomicInteger();
    RuntimeException[] failures = new RuntimeException[onHost.size()];
    AtomicInteger firstFailure = new AtomicInteger(onHost.size());
    update.workers().submit(() -> IntStream.range(0, Math.min(onHost.size(), update.workers().getParallelism()))
        .parallel()
        .forEach(
            task -> {
              // Weights after a failed one are left; those before it are all taken already.
              for (int index = next.getAndIncrement(); index < firstFailure.get(); index = next.getAndIncrement()) {
                String name = onHost.get(index);
                try {
                  if (uncaptured.contains(name)) {
                    NDArray spare = reusable.get(name);
                    capturedNow.put(name, spare != null ? copyInto(arrays.get(name), spare) : copyOf(name, arrays.get(name)));
                  }
                  touched.add(name);
                  write(name, List.of(update), Optional.empty(), Optional.ofNullable(capturedNow.get(name)));
                  synchronized (done) {
                    done[0] += weights.get(name).byteSize();
                    update.progress(done[0], total);
                  }
                } catch (RuntimeException e) {
                  failures[index] = e;
                  firstFailure.accumulateAndGet(index, Math::min);
                }
              }
            })).join();
    if (firstFailure.get() < onHost.size()) {
      throw undone(failures[firstFailure.get()], capturedNow, touched, reusable);
    }
    originals.putAll(capturedNow);
    active.add(update);
    return Optional.of(() -> restore(update, names));
  }

  /**
   * Undoes a failed {@link #apply} and returns its {@code failure}: every weight captured in it was
   * touched and no active fuse has it, so its rebuild restores it from the copy and keeps the copy
   * as a spare; spares taken for weights it did not capture go back as they are.
   */
  private RuntimeException undone(
      RuntimeException failure, Map<String, NDArray> capturedNow, Set<String> touched, Map<String, NDArray> reusable) {
    originals.putAll(capturedNow);
    rebuildAll(touched);
    reusable.forEach((name, spare) -> {
      if (capturedNow.get(name) != spare) {
        keepAsSpare(name, spare);
      }
    });
    return failure;
  }

  private synchronized void restore(WeightUpdate update, List<String> names) {
    if (!active.remove(update)) {
      throw new IllegalStateException("this fuse is already undone");
    }
    rebuildAll(names);
  }

  /**
   * {@link #rebuild} of every name; the weights on a device that no active fuse touches any more
   * and whose originals are on the same device are restored together, by one call of copies.
   */
  private void rebuildAll(Collection<String> names) {
    List<String> copiedBack = new ArrayList<>();
    for (String name : names) {
      NDArray array = arrays.get(name);
      List<WeightUpdate> updates = activeOn(name);
      if (updates.isEmpty() && onDevice(array) && originals.get(name).getDevice().equals(array.getDevice())) {
        copiedBack.add(name);
      } else {
        rebuild(name, updates);
      }
    }
    DeviceCopies.copy(copiedBack.stream().map(originals::get).toList(), copiedBack.stream().map(arrays::get).toList());
    for (String name : copiedBack) {
      // Freed in the device stream's order: after the copy just queued has read it.
      originals.remove(name).close();
    }
  }

  /** The active updates that touch weight {@code name}, in the order they were applied. */
  private List<WeightUpdate> activeOn(String name) {
    List<WeightUpdate> updates = new ArrayList<>();
    for (WeightUpdate update : active) {
      if (update.names().contains(name)) {
        updates.add(update);
      }
    }
    return updates;
  }

  /**
   * Sets {@code name} to its original with {@code updates}, the active updates that touch it,
   * re-applied, and keeps the original as a spare once none does. An original on the weight's own
   * device with none to re-apply is {@link #rebuildAll}'s, copied back with the others.
   */
  private void rebuild(String name, List<WeightUpdate> updates) {
    NDArray original = originals.get(name);
    if (updates.isEmpty() && onDevice(arrays.get(name))) {
      uploadInto(arrays.get(name), original);
      originals.remove(name).close();
    } else if (updates.isEmpty()) {
      store(name, arrays.get(name), original.toByteBuffer(true));
      keepOrClose(name, originals.remove(name));
    } else {
      write(name, updates, Optional.of(original), Optional.empty());
    }
  }

  /**
   * Applies {@code updates} in order to weight {@code name}, starting from {@code from} (the
   * weight's current values when empty). {@code before}, a copy of the weight's current values,
   * lets the first write find out whether the weight's direct view is its memory.
   */
  private void write(String name, List<WeightUpdate> updates, Optional<NDArray> from, Optional<NDArray> before) {
    NDArray array = arrays.get(name);
    TensorSpec spec = weights.get(name);
    if (onDevice(array) && updates.stream().allMatch(update -> update instanceof DeviceUpdate device && device.onDevice(spec))) {
      NDArray source = from.orElse(array);
      for (WeightUpdate update : updates) {
        ((DeviceUpdate) update).applyOnDevice(spec, source, array);
        source = array;
      }
      return;
    }
    Boolean known = writesThrough.get(name);
    boolean direct = mayWriteThrough(array) && (known != null ? known : before.isPresent());
    // Not in place, the values go through a heap copy (toByteBuffer() without a direct view):
    // NDArray.set with a direct buffer makes the array use that buffer's memory as it is, which
    // for a view of another array's storage would dangle once that array is freed.
    ByteBuffer into = direct ? array.toByteBuffer(true) : array.toByteBuffer();
    ByteBuffer source = from.isPresent() ? from.get().toByteBuffer(direct) : into;
    for (WeightUpdate update : updates) {
      update.apply(spec, source, into, spec.dtype());
      source = into;
    }
    if (!direct) {
      store(name, array, into);
    } else if (known == null) {
      settle(name, array, into, before.get().toByteBuffer(true), true);
    }
  }

  /** Makes weight {@code name} hold {@code values}, in its own memory where that can be written. */
  private void store(String name, NDArray array, ByteBuffer values) {
    Boolean known = writesThrough.get(name);
    if (Boolean.TRUE.equals(known)) {
      array.toByteBuffer(true).put(values.duplicate().clear());
    } else if (known == null && mayWriteThrough(array)) {
      settle(name, array, values, array.toByteBuffer(true), false);
    } else {
      array.set(onHeap(values));
    }
  }

  /**
   * Makes weight {@code name}, whose direct view may or may not be its memory, hold {@code values},
   * and learns which from the first element they change. {@code was} holds the weight's values
   * before; unless {@code written} says the values are in a direct view already, it is the direct
   * view they are written into. Nothing but {@code values} is ever written into the weight: another
   * thread may be reading it.
   */
  private void settle(String name, NDArray array, ByteBuffer values, ByteBuffer was, boolean written) {
    int changed = values.duplicate().clear().mismatch(was.duplicate().clear());
    if (changed < 0) {
      // The weight holds the values already, whichever its view is.
      return;
    }
    if (!written) {
      was.duplicate().clear().put(values.duplicate().clear());
    }
    boolean landed = holds(array, values, changed / weights.get(name).dtype().byteSize());
    writesThrough.put(name, landed);
    if (!landed) {
      array.set(onHeap(values));
    }
  }

  /** {@code values}, all of them, in a heap buffer: see {@link #write} for why not a direct one. */
  private static ByteBuffer onHeap(ByteBuffer values) {
    if (!values.isDirect()) {
      return values.duplicate().clear();
    }
    return ByteBuffer.allocate(values.capacity()).order(values.order()).put(values.duplicate().clear()).flip();
  }

  /**
   * Whether element {@code element} (in row-major order) of {@code array} has the bytes {@code
   * values} holds for it, read through the array's own indexing, not through a direct view that
   * may be a copy.
   */
  private static boolean holds(NDArray array, ByteBuffer values, long element) {
    long[] shape = array.getShape().getShape();
    long[] index = new long[shape.length];
    long rest = element;
    for (int axis = shape.length - 1; axis >= 0; axis--) {
      index[axis] = rest % shape[axis];
      rest /= shape[axis];
    }
    try (NDArray value = array.get(new NDIndex(index))) {
      ByteBuffer read = value.toByteBuffer();
      int offset = Math.toIntExact(element * read.remaining());
      return read.equals(values.duplicate().clear().position(offset).limit(offset + read.remaining()));
    }
  }

  /**
   * A copy of {@code array} in a new array of its manager. Where the copy's view writes through,
   * the bytes are copied in Java, from the weight's direct view (a copy of its values where it is
   * not its memory): libtorch's clone runs on its OpenMP threads, whose spinning afterwards takes
   * a core from the fuse that follows.
   */
  private NDArray copyOf(String name, NDArray array) {
    if (onDevice(array)) {
      // toDevice to the array's own device returns the array itself, copy or not.
      return keepsOnDevice(array) ? array.duplicate() : array.toDevice(Device.cpu(), true);
    }
    if (!mayWriteThrough(array) || Boolean.FALSE.equals(writesThrough.get(name))) {
      return array.duplicate();
    }
    NDArray copy = array.getManager().create(array.getShape(), array.getDataType());
    if (!ownViewWritesThrough(copy)) {
      copy.close();
      return array.duplicate();
    }
    NdArrays.copyInParallel(array.toByteBuffer(true), copy.toByteBuffer(true));
    return copy;
  }

  /** Whether the original of {@code array}, a weight fused on its device, is kept on that device. */
  private boolean keepsOnDevice(NDArray array) {
    return onDevice(array) && (keptIn != Originals.IN_HOST_MEMORY || array.getDevice().equals(Device.cpu()));
  }

  /** {@code spare} with {@code array}'s bytes: a spare exists only where both views write through. */
  private static NDArray copyInto(NDArray array, NDArray spare) {
    NdArrays.copyInParallel(array.toByteBuffer(true), spare.toByteBuffer(true));
    return spare;
  }

  /** Keeps the copy of weight {@code name} as its spare where the next copy can go into it. */
  private void keepOrClose(String name, NDArray copy) {
    if (writesThrough(name) && ownViewWritesThrough(copy)) {
      keepAsSpare(name, copy);
    } else {
      copy.close();
    }
  }

  private void keepAsSpare(String name, NDArray spare) {
    spares.keep(arrays.get(name), spare);
  }

  @Override
  public synchronized void trim() {
    factors.clear();
    for (NDArray array : arrays.values()) {
      NDArray spare = spares.take(array);
      if (spare != null) {
        spare.close();
      }
    }
  }

  /**
   * Whether {@code array} is fused where it lives, by libtorch: arrays on a GPU (their values
   * never come to the host), and in tests arrays on the CPU too.
   */
  private boolean onDevice(NDArray array) {
    return libtorchOnCpu || !array.getDevice().equals(Device.cpu());
  }

  /** Copies {@code original}, kept in host memory, back into {@code array} on its device. */
  private static void uploadInto(NDArray array, NDArray original) {
    try (NDManager scratch = array.getManager().newSubManager(array.getDevice())) {
      NDArray uploaded = original.toDevice(array.getDevice(), true);
      uploaded.attach(scratch);
      array.set(new NDIndex("..."), uploaded);
    }
  }

  /** Whether a fuse has found weight {@code name}'s direct view to be its own memory. */
  private boolean writesThrough(String name) {
    return Boolean.TRUE.equals(writesThrough.get(name));
  }

  /**
   * Whether {@code array.toByteBuffer(true)} can be the array's own memory: DJL gives a view of the
   * storage for dense CPU arrays laid out contiguously and a copy otherwise (a new array each
   * time), and its API says neither which nor whether an array is contiguous.
   */
  private static boolean mayWriteThrough(NDArray array) {
    return array.getDevice().equals(Device.cpu()) && !array.isSparse() && array.size() > 0;
  }

  /**
   * Whether writing into the direct view of {@code own}, an array this target made and nobody
   * else has seen, changes it. A byte is written and read back through a second view, which is
   * why this is never asked of a caller's array: another thread may be reading it.
   */
  private static boolean ownViewWritesThrough(NDArray own) {
    if (!mayWriteThrough(own)) {
      return false;
    }
    ByteBuffer memory = own.toByteBuffer(true);
    ByteBuffer second = own.toByteBuffer(true);
    if (!memory.isDirect()) {
      return false;
    }
    byte saved = memory.get(0);
    memory.put(0, (byte) ~saved);
    boolean shared = second.get(0) != saved;
    memory.put(0, saved);
    return shared;
  }

  @Override
  public synchronized String toString() {
    long kept = arrays.values().stream().filter(spares::has).count();
    return "WeightTarget{arrays=" + arrays.size() + ", fused=" + active.size() + ", spares=" + kept + ", factorBytesOnDevice="
        + factors.bytes() + "}";
  }
}

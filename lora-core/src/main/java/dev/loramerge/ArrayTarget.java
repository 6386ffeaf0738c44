package dev.loramerge;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.internal.Fusion;
import dev.loramerge.internal.NdArrays;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * NDArrays updated in place, with a ledger that makes every fuse undoable bit for bit.
 *
 * <p>The first fuse that touches a weight keeps a copy of its original values in a native array
 * beside it (a libtorch array: no Java heap, no garbage collection). Undoing a fuse recomputes
 * each weight it touched from that original, re-applying the fuses still active in the order
 * they were made; fuses are deterministic, so the result is exactly what fusing only the
 * remaining updates would have given, and the original itself once none is left.
 *
 * <p>Weights on the CPU and laid out contiguously are computed straight into their own memory;
 * others (on a GPU, or views) are computed in a heap buffer and set.
 */
final class ArrayTarget implements WeightTarget {
  private final ImmutableMap<String, NDArray> arrays;
  private final ImmutableMap<String, WeightInfo> weights;
  private final Map<String, NDArray> originals = new HashMap<>();
  private final List<WeightUpdate> active = new ArrayList<>();
  private final Map<String, Boolean> writesThrough = new HashMap<>();

  ArrayTarget(ImmutableMap<String, NDArray> arrays) {
    this.arrays = arrays;
    ImmutableMap.Builder<String, WeightInfo> infos = ImmutableMap.builder();
    arrays.forEach(
        (name, array) -> {
          DType dtype;
          try {
            dtype = Fusion.dtypeOf(array.getDataType(), "weight '" + name + "'");
          } catch (LoraMergeException e) {
            dtype = null;
          }
          if (dtype != null) {
            infos.put(name, new WeightInfo(dtype, array.getShape().getShape()));
          }
        });
    this.weights = infos.build();
  }

  @Override
  public ImmutableMap<String, WeightInfo> weights() {
    return weights;
  }

  @Override
  public synchronized Optional<Restorer> apply(WeightUpdate update) {
    List<String> names = new ArrayList<>(update.names());
    names.removeIf(name -> !weights.containsKey(name));
    List<String> capturedNow = new ArrayList<>();
    List<String> touched = new ArrayList<>();
    long total = names.stream().mapToLong(name -> weights.get(name).byteSize()).sum();
    long done = 0;
    try {
      for (String name : names) {
        NDArray array = arrays.get(name);
        if (!originals.containsKey(name)) {
          originals.put(name, copyOf(name, array));
          capturedNow.add(name);
        }
        touched.add(name);
        write(name, List.of(update), Optional.empty());
        done += weights.get(name).byteSize();
        update.progress(done, total);
      }
    } catch (RuntimeException e) {
      for (String name : touched) {
        rebuild(name);
      }
      for (String name : capturedNow) {
        NDArray original = originals.remove(name);
        if (original != null) {
          original.close();
        }
      }
      throw e;
    }
    active.add(update);
    return Optional.of(() -> restore(update, names));
  }

  private synchronized void restore(WeightUpdate update, List<String> names) {
    if (!active.remove(update)) {
      throw new IllegalStateException("this fuse is already undone");
    }
    for (String name : names) {
      rebuild(name);
    }
  }

  /**
   * Sets {@code name} to its original with the active updates that touch it re-applied, and lets
   * the original go once none does.
   */
  private void rebuild(String name) {
    NDArray original = originals.get(name);
    List<WeightUpdate> updates = new ArrayList<>();
    for (WeightUpdate update : active) {
      if (update.names().contains(name)) {
        updates.add(update);
      }
    }
    if (updates.isEmpty()) {
      NDArray array = arrays.get(name);
      if (writesThrough(name, array)) {
        array.toByteBuffer(true).put(original.toByteBuffer(true));
      } else {
        array.set(original.toByteBuffer());
      }
      originals.remove(name).close();
    } else {
      write(name, updates, Optional.of(original));
    }
  }

  /**
   * Applies {@code updates} in order to weight {@code name}, starting from {@code from} (the
   * weight's current values when empty).
   */
  private void write(String name, List<WeightUpdate> updates, Optional<NDArray> from) {
    NDArray array = arrays.get(name);
    WeightInfo info = weights.get(name);
    boolean inPlace = writesThrough(name, array);
    // Not in place, the values go through a heap copy (toByteBuffer() without a direct view):
    // NDArray.set with a direct buffer makes the array use that buffer's memory as it is, which
    // for a view of another array's storage would dangle once that array is freed.
    ByteBuffer into = inPlace ? array.toByteBuffer(true) : array.toByteBuffer();
    ByteBuffer source = from.isPresent() ? from.get().toByteBuffer(inPlace) : into;
    for (WeightUpdate update : updates) {
      update.apply(name, source, info, into, info.dtype());
      source = into;
    }
    if (!inPlace) {
      array.set(into);
    }
  }

  /**
   * A copy of {@code array} in a new array of its manager. Where both views write through, the
   * bytes are copied in Java: libtorch's clone runs on its OpenMP threads, whose spinning
   * afterwards takes a core from the fuse that follows.
   */
  private NDArray copyOf(String name, NDArray array) {
    if (!writesThrough(name, array)) {
      return array.duplicate();
    }
    NDArray copy = array.getManager().create(array.getShape(), array.getDataType());
    if (!viewWritesThrough(copy)) {
      copy.close();
      return array.duplicate();
    }
    NdArrays.copyInParallel(array.toByteBuffer(true), copy.toByteBuffer(true));
    return copy;
  }

  private boolean writesThrough(String name, NDArray array) {
    return writesThrough.computeIfAbsent(name, unused -> viewWritesThrough(array));
  }

  /**
   * Whether writing into {@code array.toByteBuffer(true)} changes the array itself. DJL gives a
   * view of the array's own storage for CPU arrays laid out contiguously and a copy otherwise (a
   * new array, once per weight here), and says not which; one byte written and read back through
   * a second view tells.
   */
  private static boolean viewWritesThrough(NDArray array) {
    if (!array.getDevice().equals(Device.cpu()) || array.size() == 0) {
      return false;
    }
    ByteBuffer memory = array.toByteBuffer(true);
    ByteBuffer second = array.toByteBuffer(true);
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
  public String toString() {
    return "WeightTarget{arrays=" + arrays.size() + ", fused=" + active.size() + "}";
  }
}

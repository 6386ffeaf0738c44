package dev.loramerge;

import ai.djl.ndarray.NDArray;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.internal.Fusion;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * NDArrays updated in place, with a ledger that makes every fuse undoable bit for bit.
 *
 * <p>The first fuse that touches a weight keeps a copy of its original bytes. Undoing a fuse
 * recomputes each weight it touched from that original, re-applying the fuses still active in
 * the order they were made; fuses are deterministic, so the result is exactly what fusing only
 * the remaining updates would have given, and the original itself once none is left.
 */
final class ArrayTarget implements WeightTarget {
  private final ImmutableMap<String, NDArray> arrays;
  private final ImmutableMap<String, WeightInfo> weights;
  private final Map<String, ByteBuffer> originals = new HashMap<>();
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
    Map<String, ByteBuffer> capturedNow = new LinkedHashMap<>();
    List<String> touched = new ArrayList<>();
    long total = names.stream().mapToLong(name -> weights.get(name).byteSize()).sum();
    long done = 0;
    try {
      for (String name : names) {
        NDArray array = arrays.get(name);
        WeightInfo info = weights.get(name);
        ByteBuffer memory = array.toByteBuffer(true);
        if (!originals.containsKey(name)) {
          ByteBuffer copy = copyOf(memory);
          originals.put(name, copy);
          capturedNow.put(name, copy);
        }
        touched.add(name);
        ByteBuffer fused = update.apply(name, memory, info, info.dtype());
        if (fused != memory || !writesThrough(name, array, memory)) {
          // set() makes the array use the buffer's memory as it is (DJL keeps the buffer alive),
          // so it must never get a view of some other array's storage.
          array.set(fused.isDirect() ? copyOf(fused) : fused);
        }
        done += info.byteSize();
        update.progress(done, total);
      }
    } catch (RuntimeException e) {
      for (String name : touched) {
        rebuild(name);
      }
      capturedNow.keySet().forEach(originals::remove);
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

  /** Sets {@code name} to its original with the active updates that touch it re-applied. */
  private void rebuild(String name) {
    NDArray array = arrays.get(name);
    WeightInfo info = weights.get(name);
    ByteBuffer value = copyOf(originals.get(name));
    boolean touched = false;
    for (WeightUpdate update : active) {
      if (update.names().contains(name)) {
        value = update.apply(name, value, info, info.dtype());
        touched = true;
      }
    }
    array.set(value);
    if (!touched) {
      originals.remove(name);
    }
  }

  /**
   * Whether writing into {@code memory}, a buffer from {@code array.toByteBuffer(true)}, changes
   * the array itself. DJL gives a view of the array's own storage for CPU arrays laid out
   * contiguously and a copy otherwise, and says not which; one byte written and read back through
   * a second view tells, and saves copying every fused weight back into its array.
   */
  private boolean writesThrough(String name, NDArray array, ByteBuffer memory) {
    return writesThrough.computeIfAbsent(
        name,
        unused -> {
          if (!memory.isDirect() || memory.capacity() == 0) {
            return false;
          }
          ByteBuffer second = array.toByteBuffer(true);
          byte saved = memory.get(0);
          memory.put(0, (byte) ~saved);
          boolean shared = second.get(0) != saved;
          memory.put(0, saved);
          return shared;
        });
  }

  /** A heap copy: originals can add up to gigabytes, which direct memory's limit would refuse. */
  private static ByteBuffer copyOf(ByteBuffer bytes) {
    ByteBuffer copy = ByteBuffer.allocate(bytes.remaining()).order(ByteOrder.LITTLE_ENDIAN);
    copy.put(bytes.duplicate()).flip();
    return copy;
  }

  @Override
  public String toString() {
    return "WeightTarget{arrays=" + arrays.size() + ", fused=" + active.size() + "}";
  }
}

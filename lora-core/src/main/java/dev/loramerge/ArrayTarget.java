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
    List<String> written = new ArrayList<>();
    long total = names.stream().mapToLong(name -> weights.get(name).byteSize()).sum();
    long done = 0;
    try {
      for (String name : names) {
        NDArray array = arrays.get(name);
        if (!originals.containsKey(name)) {
          ByteBuffer copy = copyOf(array.toByteBuffer());
          originals.put(name, copy);
          capturedNow.put(name, copy);
        }
        ByteBuffer fused = update.apply(name, array, weights.get(name).dtype());
        array.set(fused);
        written.add(name);
        done += weights.get(name).byteSize();
        update.progress(done, total);
      }
    } catch (RuntimeException e) {
      for (String name : written) {
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
    ByteBuffer original = originals.get(name);
    array.set(original.duplicate());
    boolean touched = false;
    for (WeightUpdate update : active) {
      if (update.names().contains(name)) {
        array.set(update.apply(name, array, weights.get(name).dtype()));
        touched = true;
      }
    }
    if (!touched) {
      originals.remove(name);
    }
  }

  /** A heap copy: originals can add up to gigabytes, which direct memory's limit would refuse. */
  private static ByteBuffer copyOf(ByteBuffer bytes) {
    ByteBuffer copy = ByteBuffer.allocate(bytes.remaining()).order(ByteOrder.nativeOrder());
    copy.put(bytes.duplicate()).flip();
    return copy;
  }

  @Override
  public String toString() {
    return "WeightTarget{arrays=" + arrays.size() + ", fused=" + active.size() + "}";
  }
}

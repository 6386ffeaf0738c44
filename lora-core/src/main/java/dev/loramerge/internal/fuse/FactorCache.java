package dev.loramerge.internal.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import java.lang.ref.WeakReference;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Function;

/**
 * Adapters' stored factors kept on the weights' device between fuses, up to a budget of bytes, so
 * that fusing the same adapter again copies only its coefficients to the device: what PEFT and
 * diffusers get by keeping their LoRA modules on the GPU. A fuse of a batch of weights whose
 * factors are kept reads them where they are; one whose factors are not copies them over once
 * and keeps them, if the budget has room.
 *
 * <p>Entries are keyed by the identity of the adapters' modules a batch's factors come from
 * (immutable, so the same instance always has the same factors), held weakly: an entry whose
 * adapter is gone is freed at the next fuse. The least recently used entries make room for new
 * ones, but never entries a running fuse has looked up: its gatherers look entries up ahead of the
 * thread that queues them, and an entry they found must still be there when it is read. Device
 * memory is freed in the device stream's order, after whatever was queued to read it.
 *
 * <p>A fuse at a time uses a cache ({@code ArrayTarget} serialises its fuses); its methods are
 * thread-safe for the fuse's gatherers.
 */
public final class FactorCache {
  private static final FactorCache NONE = new FactorCache(0);

  private final long budget;
  /** Least recently used first. */
  private final LinkedHashMap<Key, Entry> entries = new LinkedHashMap<>(16, 0.75f, true);
  private final Map<Device, NDManager> managers = new HashMap<>();
  private long bytes;
  private long fuse;

  private FactorCache(long budget) {
    this.budget = budget;
  }

  /** A cache that keeps up to {@code budget} bytes of factors on each fuse's devices together; 0 keeps none. */
  public static FactorCache withBudget(long budget) {
    checkArgument(budget >= 0, "a budget of %s bytes for factors kept on the device", budget);
    return budget == 0 ? NONE : new FactorCache(budget);
  }

  /** A cache that keeps nothing. */
  public static FactorCache none() {
    return NONE;
  }

  /** Whether this cache can keep anything. */
  boolean enabled() {
    return budget > 0;
  }

  /** The bytes of factors kept now. */
  public synchronized long bytes() {
    return bytes;
  }

  /** Frees every entry: device memory goes back to libtorch's caching allocator. */
  public synchronized void clear() {
    entries.values().forEach(Entry::close);
    entries.clear();
    bytes = 0;
    managers.values().forEach(NDManager::close);
    managers.clear();
  }

  /** Begins a fuse: entries it looks up are kept until the next one begins; entries whose adapter is gone are freed. */
  synchronized void startFuse() {
    fuse++;
    for (Iterator<Entry> it = entries.values().iterator(); it.hasNext(); ) {
      Entry entry = it.next();
      if (entry.key.stale() || entry.released()) {
        remove(it, entry);
      }
    }
  }

  /** The entry of {@code key}, kept for the rest of this fuse; empty where there is none. */
  synchronized Optional<Entry> find(Key key) {
    Entry entry = entries.get(key);
    if (entry == null) {
      return Optional.empty();
    }
    if (entry.released()) {
      // The weights' manager, under which the entry's arrays live, was closed.
      entries.remove(key);
      bytes -= entry.bytes;
      return Optional.empty();
    }
    entry.lastFuse = fuse;
    return Optional.of(entry);
  }

  /**
   * A new entry for {@code key} of {@code size} bytes, its arrays made by {@code make} in a
   * manager of its own under {@code weight}'s, on the weight's device: empty, making nothing, where
   * the key has an entry already or the budget has no room once the entries this fuse has not
   * looked up are freed, least recently used first.
   *
   * @param make the ups and the downs, each list in term order
   */
  synchronized Optional<Entry> store(Key key, long size, NDArray weight, Function<NDManager, List<List<NDArray>>> make) {
    if (!enabled() || size > budget || entries.containsKey(key)) {
      return Optional.empty();
    }
    for (Iterator<Entry> it = entries.values().iterator(); it.hasNext() && bytes + size > budget; ) {
      Entry entry = it.next();
      if (entry.lastFuse != fuse) {
        remove(it, entry);
      }
    }
    if (bytes + size > budget) {
      return Optional.empty();
    }
    Device device = weight.getDevice();
    NDManager parent = managers.get(device);
    if (parent == null || !parent.isOpen()) {
      parent = weight.getManager().newSubManager(device);
      managers.put(device, parent);
    }
    NDManager own = parent.newSubManager(device);
    try {
      List<List<NDArray>> made = make.apply(own);
      Entry entry = new Entry(key, own, made.get(0), made.get(1), size, fuse);
      entries.put(key, entry);
      bytes += size;
      return Optional.of(entry);
    } catch (RuntimeException e) {
      own.close();
      throw e;
    }
  }

  /** Frees the entry of {@code key}, one {@link #store} made but nothing wrote into. */
  synchronized void discard(Key key) {
    Entry entry = entries.remove(key);
    if (entry != null) {
      bytes -= entry.bytes;
      entry.close();
    }
  }

  private void remove(Iterator<Entry> it, Entry entry) {
    it.remove();
    bytes -= entry.bytes;
    entry.close();
  }

  @Override
  public synchronized String toString() {
    return "FactorCache{budget=" + budget + ", entries=" + entries.size() + ", bytes=" + bytes + "}";
  }

  /**
   * The identity of a batch's stored factors on a device: the immutable objects that stand for
   * their values (the adapters' modules), every job's terms in order, held weakly.
   */
  static final class Key {
    private final Device device;
    private final List<WeakReference<Object>> factors;
    private final int hash;

    Key(Device device, List<?> origins) {
      this.device = device;
      this.factors = origins.stream().<WeakReference<Object>>map(WeakReference::new).toList();
      int h = device.hashCode();
      for (Object origin : origins) {
        h = 31 * h + System.identityHashCode(origin);
      }
      this.hash = h;
    }

    boolean stale() {
      return factors.stream().anyMatch(factor -> factor.get() == null);
    }

    @Override
    public boolean equals(Object o) {
      if (!(o instanceof Key other) || other.hash != hash || !other.device.equals(device) || other.factors.size() != factors.size()) {
        return false;
      }
      for (int i = 0; i < factors.size(); i++) {
        Object mine = factors.get(i).get();
        if (mine == null || mine != other.factors.get(i).get()) {
          return false;
        }
      }
      return true;
    }

    @Override
    public int hashCode() {
      return hash;
    }
  }

  /** A batch's stored factors on its device: per term, every job's ups (count×rows×rank) and downs (count×rank×cols). */
  static final class Entry {
    private final Key key;
    private final NDManager manager;
    private final ImmutableList<NDArray> ups;
    private final ImmutableList<NDArray> downs;
    private final long bytes;
    private long lastFuse;

    private Entry(Key key, NDManager manager, List<NDArray> ups, List<NDArray> downs, long bytes, long lastFuse) {
      this.key = key;
      this.manager = manager;
      this.ups = ImmutableList.copyOf(ups);
      this.downs = ImmutableList.copyOf(downs);
      this.bytes = bytes;
      this.lastFuse = lastFuse;
    }

    ImmutableList<NDArray> ups() {
      return ups;
    }

    ImmutableList<NDArray> downs() {
      return downs;
    }

    private boolean released() {
      return !manager.isOpen() || ups.stream().anyMatch(NDArray::isReleased);
    }

    private void close() {
      manager.close();
    }
  }
}

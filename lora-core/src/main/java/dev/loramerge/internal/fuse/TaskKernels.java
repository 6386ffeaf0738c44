package dev.loramerge.internal.fuse;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A method's {@link TaskArithmetic} run on a GPU for a run of same-shape modules ({@code
 * mergeTasks} in {@code gpu/kernels/loramerge_cuda.cu}): every input's factors go to the device in
 * one copy, each input's update s·B·A is made and pruned there, and only the merged updates are
 * left, with the bits the method's merge gives on the host.
 *
 * <p>Public only for {@code dev.loramerge.merge}; not an API.
 */
public final class TaskKernels {
  /** Bytes of a slot in the host layout, as the kernels' {@code TaskSlot} reads them. */
  private static final int SLOT_BYTES = 40;
  /** Batches merged by the kernels in this process, for the device check to see that they ran. */
  private static final AtomicLong BATCHES = new AtomicLong();

  private TaskKernels() {}

  /**
   * One input of one module: B (rows×rank) and A (rank×cols) in float32, row-major; its scale
   * (as a float, as the host's product takes it), weight, and the random pruning's stream seed.
   *
   * @param member the module's place in the batch; a member's slots are consecutive
   */
  public record Slot(int member, float[] up, float[] down, int rank, float scale, double weight, long seed) {}

  /** How many batches the kernels have merged in this process. */
  public static long batches() {
    return BATCHES.get();
  }

  /**
   * The system property that, set to true, has the methods merge on the host even where the
   * kernels run (the device still re-ranks), read at every module: for comparisons in one process.
   */
  public static final String ON_HOST_PROPERTY = "loramerge.cuda.tasksOnHost";

  /**
   * The longest rows {@link TaskArithmetic.Prune#RANKED} prunes on the device: a block sorts a
   * row's magnitudes in shared memory, 8 bytes per entry rounded up to a power of two.
   */
  public static final int RANKED_MAX_COLUMNS = 16384;

  /** Whether the kernels are loaded and run on {@code device}, and {@value #ON_HOST_PROPERTY} is not set. */
  public static boolean available(Device device) {
    return CudaKernels.available(device) && !Boolean.getBoolean(ON_HOST_PROPERTY);
  }

  /** Whether the kernels are {@link #available(Device)} and run {@code arithmetic} on rows of {@code columns}. */
  public static boolean available(Device device, TaskArithmetic arithmetic, int columns) {
    return available(device) && (arithmetic.prune() != TaskArithmetic.Prune.RANKED || columns <= RANKED_MAX_COLUMNS);
  }

  /** The host bytes {@link #merge} copies for {@code slots} of {@code members} modules. */
  public static int hostBytes(List<Slot> slots, int members) {
    long bytes = factorsStart(slots.size(), members);
    for (Slot slot : slots) {
      bytes += (long) (slot.up().length + slot.down().length) * Float.BYTES;
    }
    return Math.toIntExact(bytes);
  }

  /**
   * Writes {@code slots} into {@code host} (at least {@link #hostBytes} long; pinned for a fast
   * copy) and queues the merge of {@code members} modules of rows×cols into {@code out}
   * (members×rows×cols float32 on the GPU), in {@code scratch}, on the stream DJL's operations
   * take; returns true once {@code host} may be reused, false where an array cannot be addressed
   * (nothing queued).
   */
  public static boolean merge(
      NDManager scratch, ByteBuffer host, List<Slot> slots, int members, int rows, int cols, TaskArithmetic arithmetic, NDArray out) {
    int factorsStart = factorsStart(slots.size(), members);
    ByteBuffer layout = host.duplicate().clear().order(ByteOrder.nativeOrder());
    long factorOffset = 0;
    int[] memberFirst = new int[members + 1];
    for (int t = 0; t < slots.size(); t++) {
      Slot slot = slots.get(t);
      layout.putLong(factorOffset).putDouble(slot.weight()).putLong(slot.seed()).putInt(slot.rank()).putFloat(slot.scale())
          .putInt(slot.member()).putInt(0);
      factorOffset += slot.up().length + slot.down().length;
      memberFirst[slot.member() + 1] = t + 1;
    }
    for (int member = 0; member < members; member++) {
      memberFirst[member + 1] = Math.max(memberFirst[member + 1], memberFirst[member]);
    }
    for (int first : memberFirst) {
      layout.putInt(first);
    }
    layout.position(factorsStart);
    for (Slot slot : slots) {
      layout.asFloatBuffer().put(slot.up()).put(slot.down());
      layout.position(layout.position() + (slot.up().length + slot.down().length) * Float.BYTES);
    }
    int prune = switch (arithmetic.prune()) {
      case NONE -> 0;
      case MAGNITUDE -> 1;
      case RANDOM -> 2;
      case OUTLIERS -> 3;
      case RANKED -> 4;
    };
    int combine = switch (arithmetic.combine()) {
      case SUM -> 0;
      case TOTAL_SIGN -> 1;
      case FREQUENCY_SIGN -> 2;
    };
    long perSlot = (long) rows * cols;
    // As the host computes them: ⌊density·n⌋ kept by magnitude (n an int there), the outliers'
    // ⌊gamma·n⌋ at most the rest, and "nextDouble() < density" as "draw >>> 11 < ⌈density·2⁵³⌉".
    int n = Math.toIntExact(perSlot);
    int keep = (int) (arithmetic.density() * n);
    int outliers = Math.min((int) (arithmetic.gamma() * n), n - keep);
    long randomThreshold = (long) Math.ceil(arithmetic.density() * 0x1p53);
    boolean queued = CudaKernels.mergeTasks(
        scratch, host, layout.position(), slots.size(), members, factorsStart, rows, cols, prune, arithmetic.density(),
        arithmetic.epsilon(), arithmetic.prune() == TaskArithmetic.Prune.OUTLIERS ? outliers + keep : keep, outliers,
        randomThreshold, combine, out);
    if (queued) {
      BATCHES.incrementAndGet();
    }
    return queued;
  }

  /** Slots, then each member's first slot and the end, then the factors from a 16-byte boundary. */
  private static int factorsStart(int slots, int members) {
    int header = slots * SLOT_BYTES + (members + 1) * Integer.BYTES;
    return (header + 15) & ~15;
  }
}

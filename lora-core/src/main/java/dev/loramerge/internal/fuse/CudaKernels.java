package dev.loramerge.internal.fuse;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.util.NativeResource;
import dev.loramerge.DType;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The device fuse's arithmetic as CUDA kernels, {@code gpu/kernels/loramerge_cuda.cu}, when that
 * library is built and named by the system property {@value #LIBRARY_PROPERTY}. For fp16 and bf16
 * weights, each element is computed from the factors in one pass ({@link #fuseProduct}): its
 * float64 dot product in the order {@link NarrowFusion} computes it on the host, plus the weight,
 * rounded once, so the bytes are the host's by construction and no float64 product is ever
 * stored. For the others, a float64 product libtorch computed is summed and rounded in one pass
 * ({@link #fuse}), where libtorch's operations take about a dozen (its float64 → fp16 and bf16
 * casts round twice, through float32, and every correction is a pass of its own). Without the
 * library, or for an array it cannot address, the fuse takes libtorch's operations, with the same
 * bytes. The merges' task arithmetic runs there too ({@link TaskKernels}).
 *
 * <p>The kernel reads and writes device memory through the addresses of DJL's PyTorch arrays,
 * which DJL gives out only to its own package: this class asks for them by reflection, and runs
 * on libtorch's default CUDA stream so that it is ordered with DJL's operations.
 */
final class CudaKernels {
  /** The system property naming the built kernel library, {@code libloramerge_cuda.so}. */
  static final String LIBRARY_PROPERTY = "loramerge.cuda.kernels";

  private static final Logger log = LoggerFactory.getLogger(CudaKernels.class);
  private static final boolean LOADED = load();

  private CudaKernels() {}

  private static boolean load() {
    String library = System.getProperty(LIBRARY_PROPERTY, "");
    if (library.isEmpty()) {
      return false;
    }
    Path path = Path.of(library).toAbsolutePath();
    if (!Files.isRegularFile(path)) {
      throw new IllegalStateException(LIBRARY_PROPERTY + " names " + path + ", which is not a file");
    }
    System.load(path.toString());
    log.debug("CUDA kernels from {}", path);
    return true;
  }

  /**
   * The system property that, set to true, turns the loaded kernels off (libtorch's operations
   * give the same bytes), read at every batch: for comparisons in one process.
   */
  static final String DISABLED_PROPERTY = "loramerge.cuda.disabled";

  /**
   * The system property that, set to true, has fp16 and bf16 weights fused from a float64 product
   * libtorch computed ({@link #fuse}) rather than from the factors in one pass: the same bytes, for
   * comparison.
   */
  static final String SEPARATE_PRODUCT_PROPERTY = "loramerge.cuda.separateProduct";

  /** Whether the kernels are loaded and on, and {@code device} is a GPU they run on. */
  static boolean available(Device device) {
    return LOADED && device.isGpu() && !Boolean.getBoolean(DISABLED_PROPERTY);
  }

  /**
   * Sets every {@code weights[j]} to {@code products[j] + sources[j]} rounded once to {@code
   * dtype}, and returns true; or returns false with every weight unchanged when a rounded value is
   * not finite or an array cannot be addressed (not contiguous, not a PyTorch array), for
   * libtorch's path to compute, or to report with the element's value.
   *
   * @param products the float64 products, b×m×n, contiguous, on a GPU
   * @param sources b arrays of m·n elements of the weights' dtype on the same GPU
   */
  static boolean fuse(NDManager scratch, NDArray products, List<NDArray> sources, List<NDArray> weights, DType dtype) {
    int code = switch (dtype) {
      case F64 -> 0;
      case F32 -> 1;
      case F16 -> 2;
      case BF16 -> 3;
      default -> -1;
    };
    Optional<ByteBuffer> product = DevicePointers.of(products);
    Optional<ByteBuffer[]> from = DevicePointers.all(sources);
    Optional<ByteBuffer[]> into = DevicePointers.all(weights);
    if (code < 0 || product.isEmpty() || from.isEmpty() || into.isEmpty()) {
      return false;
    }
    long perWeight = weights.get(0).size();
    NDArray rounded = scratch.create(new Shape(weights.size(), perWeight), weights.get(0).getDataType());
    Optional<ByteBuffer> out = DevicePointers.of(rounded);
    if (out.isEmpty()) {
      return false;
    }
    int device = products.getDevice().getDeviceId();
    if (fuseRound(device, product.get(), from.get(), out.get(), code, perWeight) >= 0) {
      return false;
    }
    scatter(device, out.get(), into.get(), perWeight * dtype.byteSize());
    return true;
  }

  /**
   * Sets every fp16 or bf16 {@code weights[j]} to {@code sources[j] + up[j]·down[j]}, the float64
   * dot products formed as {@link NarrowFusion} forms them and the sum rounded once, and returns
   * true; or returns false with every weight unchanged when the dtype is another, {@value
   * #SEPARATE_PRODUCT_PROPERTY} is set, a rounded value is not finite, or an array cannot be
   * addressed.
   *
   * @param up the float64 ups, b×m×r, contiguous, on a GPU
   * @param down the float64 downs, b×r×n, contiguous, on the same GPU
   * @param sources b arrays of m·n elements of the weights' dtype on the same GPU
   */
  static boolean fuseProduct(NDManager scratch, NDArray up, NDArray down, List<NDArray> sources, List<NDArray> weights, DType dtype) {
    int code = dtype == DType.F16 ? 2 : dtype == DType.BF16 ? 3 : -1;
    Shape ups = up.getShape();
    Shape downs = down.getShape();
    if (code < 0 || Boolean.getBoolean(SEPARATE_PRODUCT_PROPERTY) || ups.dimension() != 3 || downs.dimension() != 3
        || ups.get(1) > Integer.MAX_VALUE || downs.get(2) > Integer.MAX_VALUE || ups.get(2) != downs.get(1)) {
      return false;
    }
    Optional<ByteBuffer> upMemory = DevicePointers.of(up);
    Optional<ByteBuffer> downMemory = DevicePointers.of(down);
    Optional<ByteBuffer[]> from = DevicePointers.all(sources);
    Optional<ByteBuffer[]> into = DevicePointers.all(weights);
    if (upMemory.isEmpty() || downMemory.isEmpty() || from.isEmpty() || into.isEmpty()) {
      return false;
    }
    int rows = (int) ups.get(1);
    int cols = (int) downs.get(2);
    long perWeight = (long) rows * cols;
    NDArray rounded = scratch.create(new Shape(weights.size(), perWeight), weights.get(0).getDataType());
    Optional<ByteBuffer> out = DevicePointers.of(rounded);
    if (out.isEmpty()) {
      return false;
    }
    int device = up.getDevice().getDeviceId();
    if (fuseProduct(device, upMemory.get(), downMemory.get(), from.get(), out.get(), code, rows, cols, (int) ups.get(2)) >= 0) {
      return false;
    }
    scatter(device, out.get(), into.get(), perWeight * dtype.byteSize());
    return true;
  }

  /** {@code bytes} of the memory of {@code array}, a contiguous array on a GPU, from byte {@code offset} on. */
  record Region(NDArray array, long offset, long bytes) {}

  /**
   * Queues {@link #fuseProduct} of a batch from its factors as its adapters store them, on the
   * device's stream, and returns without waiting for it: the bytes of {@code host} at each of
   * {@code hostOffsets} are copied into the matching region of {@code uploads}, after which event
   * {@code copied} is recorded (the host memory may be rewritten once it has passed); a kernel per
   * term forms the term's float64 coefficients ({@code coefficients}, one per job), ups and downs
   * (as stored, every job's after the other's) into the float64 factors, with the roundings
   * libtorch's operations make; the product kernel rounds the sums, and a last kernel writes them
   * into the weights unless this batch or an earlier one of the same {@code flags} had a value that
   * is not finite. {@code flags} is a device array of {@code long}s, all -1 at first: element 0
   * becomes the first batch that failed, element {@code 1 + batch} this batch's first flat index
   * that is not finite. The float64 up is laid out by rank there (count×rank×rows), so that the
   * product reads it as it reads the down. The arrays made here belong to {@code scratch}, which
   * may be closed as soon as this returns: libtorch frees device memory in the stream's order.
   * Returns false, queueing nothing, where {@link #fuseProduct} would return false before
   * computing or a region cannot be addressed.
   *
   * @param ranks each term's rank, alike for every job
   * @param upTypes each term's up dtype, alike for every job
   * @param downTypes each term's down dtype, alike for every job
   */
  static boolean queueTerms(
      NDManager scratch, ByteBuffer host, long copied, long[] hostOffsets, List<Region> uploads, List<Region> coefficients,
      List<Region> ups, List<Region> downs, int[] ranks, DType[] upTypes, DType[] downTypes, double factor, long rows, long cols,
      List<NDArray> sources, List<NDArray> weights, DType dtype, NDArray flags, int batch) {
    int code = dtype == DType.F16 ? 2 : dtype == DType.BF16 ? 3 : -1;
    int[] upCodes = storedCodes(upTypes);
    int[] downCodes = storedCodes(downTypes);
    if (code < 0 || upCodes == null || downCodes == null || copied == 0 || Boolean.getBoolean(SEPARATE_PRODUCT_PROPERTY)
        || rows > Integer.MAX_VALUE || cols > Integer.MAX_VALUE || !host.isDirect()) {
      return false;
    }
    for (int i = 0; i < hostOffsets.length; i++) {
      if (hostOffsets[i] < 0 || hostOffsets[i] + uploads.get(i).bytes() > host.capacity()) {
        return false;
      }
    }
    Optional<ByteBuffer[]> uploadMemory = regions(uploads);
    Optional<ByteBuffer[]> coefficientMemory = regions(coefficients);
    Optional<ByteBuffer[]> upMemory = regions(ups);
    Optional<ByteBuffer[]> downMemory = regions(downs);
    Optional<ByteBuffer[]> from = DevicePointers.all(sources);
    Optional<ByteBuffer[]> into = DevicePointers.all(weights);
    Optional<ByteBuffer> flagMemory = DevicePointers.of(flags);
    if (uploadMemory.isEmpty() || coefficientMemory.isEmpty() || upMemory.isEmpty() || downMemory.isEmpty() || from.isEmpty()
        || into.isEmpty() || flagMemory.isEmpty()) {
      return false;
    }
    int count = weights.size();
    int rank = Arrays.stream(ranks).sum();
    Optional<ByteBuffer> up = DevicePointers.of(scratch.create(new Shape(count, rank, rows), DataType.FLOAT64));
    Optional<ByteBuffer> down = DevicePointers.of(scratch.create(new Shape(count, rank, cols), DataType.FLOAT64));
    Optional<ByteBuffer> out = DevicePointers.of(scratch.create(new Shape(count, rows * cols), weights.get(0).getDataType()));
    if (up.isEmpty() || down.isEmpty() || out.isEmpty()) {
      return false;
    }
    queueTerms(weights.get(0).getDevice().getDeviceId(), host, hostOffsets, uploadMemory.get(), copied, coefficientMemory.get(),
        upMemory.get(), downMemory.get(), ranks, upCodes, downCodes, factor, up.get(), down.get(), from.get(), out.get(), into.get(), code,
        (int) rows, (int) cols, flagMemory.get(), batch);
    return true;
  }

  /** Buffers over the memory of every region (for their addresses only), or empty where one cannot be addressed. */
  private static Optional<ByteBuffer[]> regions(List<Region> regions) {
    ByteBuffer[] buffers = new ByteBuffer[regions.size()];
    for (int i = 0; i < buffers.length; i++) {
      Region region = regions.get(i);
      Optional<ByteBuffer> memory = DevicePointers.of(region.array());
      if (memory.isEmpty() || region.offset() < 0 || region.offset() + region.bytes() > memory.get().capacity()) {
        return Optional.empty();
      }
      buffers[i] = memory.get().slice(Math.toIntExact(region.offset()), Math.toIntExact(region.bytes()));
    }
    return Optional.of(buffers);
  }

  /** The kernels' codes of stored factors' dtypes (0 F64, 1 F32, 2 F16, 3 BF16), or null where one is another. */
  private static int[] storedCodes(DType[] dtypes) {
    int[] codes = new int[dtypes.length];
    for (int i = 0; i < dtypes.length; i++) {
      switch (dtypes[i]) {
        case F64 -> codes[i] = 0;
        case F32 -> codes[i] = 1;
        case F16 -> codes[i] = 2;
        case BF16 -> codes[i] = 3;
        default -> {
          return null;
        }
      }
    }
    return codes;
  }

  /**
   * Queues the merged dense updates of {@code members} modules of rows×cols into {@code out}
   * (members×rows×cols float32 on a GPU) from {@code host}'s first {@code hostBytes}, laid out as
   * {@link TaskKernels} says, and returns true once the host memory may be reused; false,
   * queueing nothing, where an array cannot be addressed.
   */
  static boolean mergeTasks(
      NDManager scratch, ByteBuffer host, int hostBytes, int slots, int members, int factorsStart, int rows, int cols, int prune,
      double density, double epsilon, long keep, long outlierKeep, long randomThreshold, int combine, NDArray out) {
    if (!host.isDirect() || hostBytes > host.capacity()) {
      return false;
    }
    long perSlot = (long) rows * cols;
    Optional<ByteBuffer> staging = DevicePointers.of(scratch.create(new Shape(hostBytes), DataType.INT8));
    Optional<ByteBuffer> deltas = DevicePointers.of(scratch.create(new Shape(slots, perSlot), DataType.FLOAT32));
    Optional<ByteBuffer> work = DevicePointers.of(scratch.create(new Shape(taskWorkBytes(slots, perSlot)), DataType.INT8));
    Optional<ByteBuffer> merged = DevicePointers.of(out);
    if (staging.isEmpty() || deltas.isEmpty() || work.isEmpty() || merged.isEmpty()) {
      return false;
    }
    mergeTasks(out.getDevice().getDeviceId(), host, hostBytes, staging.get(), slots, members, factorsStart, rows, cols, deltas.get(),
        work.get(), prune, density, epsilon, keep, outlierKeep, randomThreshold, combine, merged.get());
    return true;
  }

  /**
   * Queues {@code out} = A·B, or Aᵀ·B where {@code transposeA} (A then stored inner×rows), for
   * each of {@code count} matrices, in float64 where the arrays are, else float32: every entry the
   * chain of fused multiply-adds of {@code OrderedProducts} on the host. An operand of two
   * dimensions is shared by the whole batch. False, queueing nothing, where an array cannot be
   * addressed.
   */
  static boolean orderedProduct(NDArray a, NDArray b, NDArray out, boolean transposeA, int count, int rows, int inner, int cols) {
    Optional<ByteBuffer> aMemory = DevicePointers.of(a);
    Optional<ByteBuffer> bMemory = DevicePointers.of(b);
    Optional<ByteBuffer> outMemory = DevicePointers.of(out);
    if (aMemory.isEmpty() || bMemory.isEmpty() || outMemory.isEmpty()) {
      return false;
    }
    long aStride = a.getShape().dimension() == 2 ? 0 : (long) rows * inner;
    long bStride = b.getShape().dimension() == 2 ? 0 : (long) inner * cols;
    orderedProduct(out.getDevice().getDeviceId(), out.getDataType() == DataType.FLOAT64, transposeA, aMemory.get(), bMemory.get(),
        outMemory.get(), count, rows, inner, cols, aStride, bStride, (long) rows * cols);
    return true;
  }

  private static native void orderedProduct(
      int device, boolean doubles, boolean transposeA, ByteBuffer a, ByteBuffer b, ByteBuffer out, int count, int rows, int inner,
      int cols, long aStride, long bStride, long outStride);

  private static native long taskWorkBytes(int slots, long perSlot);

  private static native void mergeTasks(
      int device, ByteBuffer host, long hostBytes, ByteBuffer staging, int slots, int members, long factorsStart, int rows, int cols,
      ByteBuffer deltas, ByteBuffer work, int prune, double density, double epsilon, long keep, long outlierKeep, long randomThreshold,
      int combine, ByteBuffer out);

  /**
   * Pins {@code buffer}'s memory (page-locked, so that copies from it to a GPU run at the bus's
   * speed) where the kernels are loaded and {@code device} is a GPU; false otherwise or where
   * CUDA refuses. A pinned buffer must be {@linkplain #unpin unpinned} before it is dropped.
   */
  static boolean pin(ByteBuffer buffer, Device device) {
    return available(device) && buffer.isDirect() && buffer.capacity() > 0 && pin(buffer);
  }

  private static native boolean pin(ByteBuffer buffer);

  /**
   * Unpins a buffer {@link #pin} pinned. A refusal is logged, not thrown: the fuse it served is
   * done, and the memory stays pinned until the process ends.
   */
  static void unpin(ByteBuffer buffer) {
    if (!unpinned(buffer)) {
      log.warn("CUDA did not unpin a factor buffer of {} bytes", buffer.capacity());
    }
  }

  private static native boolean unpinned(ByteBuffer buffer);

  private static synchronized native long fuseRound(
      int device, ByteBuffer product, ByteBuffer[] sources, ByteBuffer out, int dtype, long perWeight);

  private static synchronized native long fuseProduct(
      int device, ByteBuffer up, ByteBuffer down, ByteBuffer[] sources, ByteBuffer out, int dtype, int rows, int cols, int rank);

  private static native void queueTerms(
      int device, ByteBuffer host, long[] hostOffsets, ByteBuffer[] uploads, long copied, ByteBuffer[] coefficients, ByteBuffer[] ups,
      ByteBuffer[] downs, int[] ranks, int[] upTypes, int[] downTypes, double factor, ByteBuffer up, ByteBuffer down,
      ByteBuffer[] sources, ByteBuffer out, ByteBuffer[] weights, int dtype, int rows, int cols, ByteBuffer flags, int batch);

  /**
   * A CUDA event on {@code device}, which {@link #queueTerms} records once it has copied a host
   * buffer, where the kernels run there; else 0. An event must be {@linkplain #freeEvent freed}.
   */
  static long newEvent(Device device) {
    return available(device) ? newEvent(device.getDeviceId()) : 0;
  }

  private static native long newEvent(int device);

  /** Waits until the device has passed the last record of {@code event}; at once for 0 or an event never recorded. */
  static void awaitEvent(long event) {
    if (event != 0) {
      synchronizeEvent(event);
    }
  }

  static void freeEvent(long event) {
    if (event != 0) {
      destroyEvent(event);
    }
  }

  private static native void synchronizeEvent(long event);

  private static native void destroyEvent(long event);

  /**
   * Waits for everything the kernels queued on {@code device} without waiting for it (queued
   * batches, copies into the weights); nothing where the kernels do not run there.
   */
  static void synchronize(Device device) {
    if (available(device)) {
      synchronize(device.getDeviceId());
    }
  }

  /**
   * Copies every {@code from[j]} into {@code to[j]} (arrays of the same byte size, contiguous, on
   * one GPU where the kernels run) with one call, queued on the device's stream, and returns true;
   * or returns false, copying nothing, where the kernels do not run there or an array cannot be
   * addressed.
   */
  static boolean copies(List<NDArray> from, List<NDArray> to) {
    if (from.isEmpty()) {
      return true;
    }
    Device device = from.get(0).getDevice();
    if (!available(device) || !from.stream().allMatch(array -> array.getDevice().equals(device))
        || !to.stream().allMatch(array -> array.getDevice().equals(device))) {
      return false;
    }
    Optional<ByteBuffer[]> sources = DevicePointers.all(from);
    Optional<ByteBuffer[]> targets = DevicePointers.all(to);
    if (sources.isEmpty() || targets.isEmpty()) {
      return false;
    }
    for (int j = 0; j < from.size(); j++) {
      if (sources.get()[j].capacity() != targets.get()[j].capacity()) {
        return false;
      }
    }
    copies(device.getDeviceId(), sources.get(), targets.get());
    return true;
  }

  private static native void copies(int device, ByteBuffer[] from, ByteBuffer[] to);

  private static synchronized native void scatter(int device, ByteBuffer from, ByteBuffer[] weights, long bytesPerWeight);

  private static synchronized native void synchronize(int device);

  /**
   * Direct buffers over the memory of PyTorch arrays, from DJL's {@code
   * PyTorchLibrary.torchDirectByteBuffer}, for their addresses only: a buffer over device memory
   * must never be read or written from Java.
   */
  static final class DevicePointers {
    private static final MethodHandle DIRECT_BUFFER = directBuffer();

    private DevicePointers() {}

    private static MethodHandle directBuffer() {
      try {
        Class<?> library = Class.forName("ai.djl.pytorch.jni.PyTorchLibrary");
        Field instance = library.getDeclaredField("LIB");
        instance.setAccessible(true);
        Method method = library.getDeclaredMethod("torchDirectByteBuffer", long.class);
        method.setAccessible(true);
        return MethodHandles.lookup().unreflect(method).bindTo(instance.get(null))
            .asType(MethodType.methodType(ByteBuffer.class, long.class));
      } catch (ReflectiveOperationException | RuntimeException e) {
        return null;
      }
    }

    /**
     * A buffer over {@code array}'s memory, or empty when the array is not a contiguous PyTorch
     * array of at most 2³¹ − 1 bytes, or DJL does not give out its memory.
     */
    static Optional<ByteBuffer> of(NDArray array) {
      if (DIRECT_BUFFER == null || !(array instanceof NativeResource<?> resource) || !(resource.getHandle() instanceof Long handle)) {
        return Optional.empty();
      }
      try {
        return Optional.of((ByteBuffer) DIRECT_BUFFER.invokeExact((long) handle));
      } catch (RuntimeException e) {
        // DJL's engine exception: not contiguous, sparse, or too large for a buffer.
        return Optional.empty();
      } catch (Throwable e) {
        throw new IllegalStateException("DJL's torchDirectByteBuffer failed", e);
      }
    }

    /** {@link #of} of every array, or empty when one of them has none. */
    static Optional<ByteBuffer[]> all(List<NDArray> arrays) {
      ByteBuffer[] buffers = new ByteBuffer[arrays.size()];
      for (int i = 0; i < buffers.length; i++) {
        Optional<ByteBuffer> buffer = of(arrays.get(i));
        if (buffer.isEmpty()) {
          return Optional.empty();
        }
        buffers[i] = buffer.get();
      }
      return Optional.of(buffers);
    }
  }
}

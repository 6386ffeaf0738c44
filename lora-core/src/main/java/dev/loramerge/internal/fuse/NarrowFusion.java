package dev.loramerge.internal.fuse;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.internal.linalg.VectorProducts;
import dev.loramerge.internal.numeric.FloatFormats;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;
import java.util.stream.IntStream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Fuses into fp16 and bf16 weights with float32 arithmetic, and still gives every element of
 * {@code W + up·down} as its float64 sum rounded once.
 *
 * <p>The update is multiplied in float32 and added to the weight in float32. Each element's
 * float32 sum {@code s} is within a proven bound of the exact sum {@code x}:
 *
 * <pre>
 *   |s − x| ≤ (1 + 2⁻¹⁰)·((k+3)·2⁻²⁴·‖up_i‖·‖down_j‖ + 2⁻²⁴·|s|)
 * </pre>
 *
 * (k products each rounded once and summed in any order, the factors rounded once to float32,
 * Cauchy–Schwarz for {@code Σ|up_il·down_lj|}, then the float32 addition; the factor 1 + 2⁻¹⁰
 * covers second-order terms and the rounding of the bound's own arithmetic). Per row the bound is
 * turned into a threshold in float32 ulps for each exponent, with the largest ‖down_j‖ of the
 * weight. When {@code s} is farther than that from every rounding boundary of the narrow format,
 * {@code s} and {@code x} round to the same value. The elements closer to a boundary (1–2 % for
 * typical LoRA updates), fp16 subnormals, and anything out of range are recomputed in float64
 * from the float64 factors and rounded once, as {@link Fusion} does for every element of wider
 * types.
 *
 * <p>Rows are processed in blocks of 256 K elements, which run in parallel. The result does not
 * depend on the number of threads, nor on how the product is computed: every element is
 * determined by its own values alone.
 *
 * <p>When the JVM runs with {@code --add-modules jdk.incubator.vector}, fp16 into fp16 and bf16
 * into bf16 take the fast path: the product is computed in Java ({@link VectorProducts}) a few
 * rows at a time and rounded by {@link VectorRounding} while it is still in cache, with no native
 * call, where the scalar loop here multiplies each block in libtorch and rounds one element at a
 * time; the results are the same bytes.
 *
 * <p>The class is longer than 400 lines because the error bound, the per-row thresholds derived
 * from it, the rounding that trusts them and the float64 recomputation of the rest are one proof:
 * each part is correct only for the others as written here, and one file keeps that argument
 * checkable in one place. The vector kernels, which follow the same arithmetic, live apart in
 * {@link VectorRounding} and {@link VectorProducts}.
 */
final class NarrowFusion {
  private static final Logger log = LoggerFactory.getLogger(NarrowFusion.class);
  /**
   * Whether {@link VectorRounding} is used: its module is in the boot layer (checked first, so
   * that the class is never loaded without it) and it pays on this hardware.
   */
  static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorRounding.pays();

  private static final AtomicBoolean HINTED = new AtomicBoolean();
  /** Elements per block: the float32 product of one block is 1 MiB. */
  private static final int BLOCK_ELEMENTS = 1 << 18;
  /** Elements per group of rows multiplied and rounded together, their product still in cache. */
  private static final int GROUP_ELEMENTS = 1 << 14;
  private static final float UNIT_ROUNDOFF = 0x1p-24f;
  private static final float SAFETY = 1 + 0x1p-10f;
  /**
   * Float32 exponent fields whose sums round in the fast path: fp16 normals below 2¹⁵ (from 2⁻¹⁴;
   * the binade of 32768 holds fp16's overflow boundary).
   */
  private static final int[] FLOAT16_FAST_EXPONENTS = {113, 141};
  /** Likewise for bf16: from 2⁻¹⁰³ (the float32 ulps stay normal) to below 2¹²⁷. */
  private static final int[] BFLOAT16_FAST_EXPONENTS = {24, 253};

  /** Float64 bits of 2⁻¹⁴ and of 65520 (the fp16 overflow midpoint). */
  private static final long DOUBLE_FLOAT16_MIN_NORMAL_BITS = Double.doubleToRawLongBits(0x1p-14);
  private static final long DOUBLE_FLOAT16_OVERFLOW_BITS = Double.doubleToRawLongBits(65520.0);
  /** Float64 bits of 2⁻¹²⁶ and of bf16's overflow midpoint. */
  private static final long DOUBLE_BFLOAT16_MIN_NORMAL_BITS = Double.doubleToRawLongBits(0x1p-126);
  private static final long DOUBLE_BFLOAT16_OVERFLOW_BITS = Double.doubleToRawLongBits(Math.scalb(511.0, 119));

  private final DType input;
  private final DType output;
  private final int rows;
  private final int cols;
  private final int rank;
  private final double[] up;
  /** {@code down} transposed, so that each recomputed element reads two contiguous rows. */
  private final double[] downByColumn;
  /** The factors rounded to float32, which the fast path multiplies. */
  private final float[] upSingle;
  private final float[] downSingle;
  /** {@code downSingle} laid out for {@link VectorProducts}; null on the scalar path. */
  private final float[] downPanels;
  /** The same in libtorch for the scalar path's products; null on the vector path. */
  private final NDArray up32;
  private final NDArray down32;
  private final float[] rowBounds;
  private final double maxColNorm;
  /** Per row, {@code rowBounds[r]·maxColNorm} rounded up to float; null for the scalar path. */
  private final float[] vectorBounds;
  private final String label;

  private NarrowFusion(
      Supplier<NDManager> manager, DType input, DType output, int rows, int cols, double[] up, double[] down, int rank, String label,
      boolean vectorized) {
    this.input = input;
    this.output = output;
    this.rows = rows;
    this.cols = cols;
    this.rank = rank;
    this.up = up;
    this.label = label;
    this.upSingle = toFloats(up);
    this.downSingle = toFloats(down);
    this.downPanels = vectorized ? VectorProducts.panels(downSingle, rank, cols) : null;
    this.up32 = vectorized ? null : manager.get().create(upSingle, new Shape(rows, rank));
    this.down32 = vectorized ? null : manager.get().create(downSingle, new Shape(rank, cols));
    float slack = SAFETY * (rank + 3) * UNIT_ROUNDOFF;
    this.rowBounds = new float[rows];
    for (int r = 0; r < rows; r++) {
      double squares = 0;
      for (int l = 0; l < rank; l++) {
        squares += this.up[r * rank + l] * this.up[r * rank + l];
      }
      rowBounds[r] = slack * (float) Math.sqrt(squares);
    }
    this.downByColumn = new double[cols * rank];
    double largest = 0;
    for (int c = 0; c < cols; c++) {
      double squares = 0;
      for (int l = 0; l < rank; l++) {
        double value = down[l * cols + c];
        downByColumn[c * rank + l] = value;
        squares += value * value;
      }
      largest = Math.max(largest, Math.sqrt(squares));
    }
    this.maxColNorm = largest;
    this.vectorBounds = vectorized ? new float[rows] : null;
    if (vectorized) {
      for (int r = 0; r < rows; r++) {
        double bound = (double) rowBounds[r] * maxColNorm;
        float rounded = (float) bound;
        vectorBounds[r] = rounded < bound ? Math.nextUp(rounded) : rounded;
      }
    }
  }

  private static float[] toFloats(double[] values) {
    float[] single = new float[values.length];
    for (int i = 0; i < values.length; i++) {
      single[i] = (float) values[i];
    }
    return single;
  }

  /** Whether weights of {@code input} fuse here when written as {@code output}. */
  static boolean handles(DType input, DType output, long rows, long numel) {
    boolean narrowOut = output == DType.F16 || output == DType.BF16;
    boolean exactInFloat = input == DType.F16 || input == DType.BF16 || input == DType.F32;
    return narrowOut && exactInFloat && rows > 0 && numel % rows == 0 && numel / rows <= BLOCK_ELEMENTS
        && numel < Integer.MAX_VALUE / 4;
  }

  /**
   * Writes {@code weight} (bytes of {@code input}, little-endian) plus {@code up·down} (float64,
   * m×k and k×n, row-major) into {@code into} as {@code output} bytes; {@code into} may be {@code
   * weight}.
   */
  static void fuse(
      FuseScratch scratches, Supplier<NDManager> manager, ByteBuffer weight, DType input, long rows, double[] up,
      double[] down, int rank, ByteBuffer into, DType output, String label) {
    boolean vectorizable = input == output;
    if (vectorizable && !VECTOR_API && HINTED.compareAndSet(false, true)) {
      log.info("Fusing into {} is about ten times faster with the JVM option --add-modules jdk.incubator.vector", output);
    }
    fuse(scratches, manager, weight, input, rows, up, down, rank, into, output, label, vectorizable && VECTOR_API);
  }

  /** {@link #fuse}, with the Vector API kernels or without; {@code vectorized} needs {@link #VECTOR_API}. */
  static void fuse(
      FuseScratch scratches, Supplier<NDManager> manager, ByteBuffer weight, DType input, long rows, double[] up,
      double[] down, int rank, ByteBuffer into, DType output, String label, boolean vectorized) {
    int numel = weight.remaining() / input.byteSize();
    int m = Math.toIntExact(rows);
    NarrowFusion fusion = new NarrowFusion(manager, input, output, m, numel / m, up, down, rank, label, vectorized);
    try {
      fusion.run(scratches, manager, weight.duplicate().order(ByteOrder.LITTLE_ENDIAN), into.duplicate().order(ByteOrder.LITTLE_ENDIAN));
    } finally {
      if (fusion.up32 != null) {
        fusion.up32.close();
        fusion.down32.close();
      }
    }
  }

  private void run(FuseScratch scratches, Supplier<NDManager> manager, ByteBuffer weight, ByteBuffer target) {
    int rowsPerBlock = Math.max(1, BLOCK_ELEMENTS / cols);
    int blocks = (rows + rowsPerBlock - 1) / rowsPerBlock;
    int tasks = Math.min(blocks, FuseScratch.parallelism());
    Failure[] failures = new Failure[tasks];
    IntStream.range(0, tasks)
        .parallel()
        .forEach(
            task -> {
              Scratch scratch = scratches.take(BLOCK_ELEMENTS);
              try {
                for (int block = task; block < blocks; block += tasks) {
                  int first = block * rowsPerBlock;
                  int last = Math.min(rows, first + rowsPerBlock);
                  Failure failure = fuseRows(manager, weight, target, first, last, scratch);
                  if (failure != null) {
                    failures[task] = failure;
                    return;
                  }
                }
              } finally {
                scratches.give(scratch);
              }
            });
    Failure first = null;
    for (Failure failure : failures) {
      if (failure != null && (first == null || failure.index < first.index)) {
        first = failure;
      }
    }
    if (first != null) {
      throw Fusion.notRepresentable(label, first.value, first.index, output);
    }
  }

  private record Failure(long index, double value) {}

  /** One block's buffers, handed from block to block and weight to weight by {@link FuseScratch}. */
  static final class Scratch {
    final float[] delta;
    final float[] weight;
    final short[] input;
    final short[] bits;
    /** Indices, in the block, of the elements recomputed in float64. */
    final int[] slow;
    final int[] thresholds = new int[256];

    Scratch(int elements) {
      this.delta = new float[elements];
      this.weight = new float[elements];
      this.input = new short[elements];
      this.bits = new short[elements];
      this.slow = new int[elements];
    }
  }

  private Failure fuseRows(Supplier<NDManager> manager, ByteBuffer weight, ByteBuffer target, int first, int last, Scratch scratch) {
    if (vectorBounds == null) {
      return fuseBlock(manager, weight, target, first, last, scratch);
    }
    // A few rows at a time, so that the weights, the product and the result stay in cache from
    // the product to the write.
    int rowsPerGroup = Math.max(2, GROUP_ELEMENTS / cols & ~1);
    for (int row = first; row < last; row += rowsPerGroup) {
      int groupRows = Math.min(rowsPerGroup, last - row);
      int count = groupRows * cols;
      weight.asShortBuffer().get(row * cols, scratch.input, 0, count);
      VectorProducts.product(upSingle, row, groupRows, downSingle, downPanels, rank, cols, 1, scratch.delta);
      int slowCount = VectorRounding.round(
          output == DType.F16, scratch.input, scratch.delta, scratch.bits, groupRows, cols, vectorBounds, row, scratch.slow);
      Failure failure = roundSlow(row, scratch, slowCount);
      if (failure != null) {
        return failure;
      }
      target.asShortBuffer().put(row * cols, scratch.bits, 0, count);
    }
    return null;
  }

  /** The scalar path: a block multiplied in libtorch, then rounded. */
  private Failure fuseBlock(Supplier<NDManager> manager, ByteBuffer weight, ByteBuffer target, int first, int last, Scratch scratch) {
    int count = (last - first) * cols;
    int offset = first * cols;
    try (NDManager blockManager = manager.get().newSubManager()) {
      // A slice of the float32 factor, not a new array from Java: DJL copies Java arrays into
      // fresh direct buffers, which only the garbage collector frees.
      NDArray upRows = up32.get(first + ":" + last);
      upRows.attach(blockManager);
      upRows.matMul(down32).toByteBuffer(true).order(ByteOrder.nativeOrder()).asFloatBuffer().get(scratch.delta, 0, count);
    }
    readWeights(weight, offset, count, scratch);
    int slowCount = output == DType.F16 ? roundFloat16(first, last, scratch) : roundBFloat16(first, last, scratch);
    Failure failure = roundSlow(first, scratch, slowCount);
    target.asShortBuffer().put(offset, scratch.bits, 0, count);
    return failure;
  }

  /** Widens {@code count} weights from {@code offset} into {@code scratch.weight}. */
  private void readWeights(ByteBuffer weight, int offset, int count, Scratch scratch) {
    float[] values = scratch.weight;
    short[] bits = scratch.input;
    switch (input) {
      case F32:
        weight.asFloatBuffer().get(offset, values, 0, count);
        break;
      case F16:
        weight.asShortBuffer().get(offset, bits, 0, count);
        for (int i = 0; i < count; i++) {
          values[i] = FloatFormats.float16Value(bits[i]);
        }
        break;
      case BF16:
        weight.asShortBuffer().get(offset, bits, 0, count);
        for (int i = 0; i < count; i++) {
          values[i] = Float.intBitsToFloat(bits[i] << 16);
        }
        break;
      default:
        throw new AssertionError(input);
    }
  }

  /**
   * Rounds the block's sums that are clear of every rounding boundary into {@code scratch.bits}
   * and lists the others in {@code scratch.slow}; returns how many it listed.
   */
  private int roundFloat16(int first, int last, Scratch scratch) {
    float[] delta = scratch.delta;
    float[] weights = scratch.weight;
    short[] bits = scratch.bits;
    int[] slow = scratch.slow;
    int[] thresholds = scratch.thresholds;
    int slowCount = 0;
    for (int r = first; r < last; r++) {
      fillThresholds(thresholds, r, FLOAT16_FAST_EXPONENTS, 0x1000);
      int base = (r - first) * cols;
      for (int c = 0; c < cols; c++) {
        int i = base + c;
        int raw = Float.floatToRawIntBits(weights[i] + delta[i]);
        int magnitude = raw & 0x7FFFFFFF;
        int dropped = magnitude & 0x1FFF;
        // Distance to the nearest rounding boundary in float32 ulps; below a power of two the
        // boundary is closer (the binade below is finer), hence the second term.
        int margin = Math.min(Math.abs(dropped - 0x1000), dropped + 0x800);
        if (margin > thresholds[magnitude >>> 23]) {
          bits[i] = (short) (((raw >>> 16) & 0x8000) | ((magnitude - 0x38000000 + 0xFFF + ((magnitude >>> 13) & 1)) >>> 13));
        } else {
          slow[slowCount++] = i;
        }
      }
    }
    return slowCount;
  }

  /** {@link #roundFloat16} for bf16. */
  private int roundBFloat16(int first, int last, Scratch scratch) {
    float[] delta = scratch.delta;
    float[] weights = scratch.weight;
    short[] bits = scratch.bits;
    int[] slow = scratch.slow;
    int[] thresholds = scratch.thresholds;
    int slowCount = 0;
    for (int r = first; r < last; r++) {
      fillThresholds(thresholds, r, BFLOAT16_FAST_EXPONENTS, 0x8000);
      int base = (r - first) * cols;
      for (int c = 0; c < cols; c++) {
        int i = base + c;
        int raw = Float.floatToRawIntBits(weights[i] + delta[i]);
        int magnitude = raw & 0x7FFFFFFF;
        int dropped = magnitude & 0xFFFF;
        int margin = Math.min(Math.abs(dropped - 0x8000), dropped + 0x4000);
        if (margin > thresholds[magnitude >>> 23]) {
          bits[i] = (short) ((raw + 0x7FFF + ((raw >>> 16) & 1)) >>> 16);
        } else {
          slow[slowCount++] = i;
        }
      }
    }
    return slowCount;
  }

  /**
   * Recomputes the listed elements in float64 and rounds them once; returns the first that is
   * beyond the output's range.
   */
  private Failure roundSlow(int first, Scratch scratch, int slowCount) {
    int[] slow = scratch.slow;
    short[] bits = scratch.bits;
    boolean half = output == DType.F16;
    int exponentMask = half ? 0x7C00 : 0x7F80;
    // The indices ascend: the row is found by stepping, not by dividing.
    int row = first;
    int rowStart = 0;
    for (int k = 0; k < slowCount; k++) {
      int i = slow[k];
      while (i - rowStart >= cols) {
        rowStart += cols;
        row++;
      }
      int c = i - rowStart;
      double exact = weightValue(scratch, i) + exactUpdate(row, c);
      short rounded = half ? toFloat16(exact) : toBFloat16(exact);
      if ((rounded & exponentMask) == exponentMask) {
        return new Failure((long) row * cols + c, exact);
      }
      bits[i] = rounded;
    }
    return null;
  }

  /** Element {@code i}'s weight: widened already on the scalar path, as input bits on the vector path. */
  private double weightValue(Scratch scratch, int i) {
    if (vectorBounds == null) {
      return scratch.weight[i];
    }
    short bits = scratch.input[i];
    return input == DType.F16 ? FloatFormats.float16Value(bits) : Float.intBitsToFloat(bits << 16);
  }

  /**
   * For each float32 exponent field E of row {@code row}'s sums, the error bound in float32
   * ulps (2^(E−150)), rounded down: a sum whose distance to the nearest rounding boundary is
   * more ulps than that rounds like the exact value. With {@code |s| < 2^(E−126)} the bound
   * becomes {@code rowBound·max‖down_j‖·2^(150−E) + 1 + 2⁻¹⁰}. Exponents outside {@code fast}
   * (zero and subnormal results, the top binade where rounding may overflow, infinities and NaN)
   * get {@code never}, which no margin exceeds.
   */
  private void fillThresholds(int[] thresholds, int row, int[] fast, int never) {
    Arrays.fill(thresholds, never);
    // Halving per exponent is exact; once the product term is gone every threshold is 1.
    double term = Math.scalb((double) rowBounds[row] * maxColNorm, 150 - fast[0]);
    int exponent = fast[0];
    for (; exponent <= fast[1] && term >= 0x1p-20; exponent++, term *= 0.5) {
      thresholds[exponent] = (int) Math.min(never, Math.floor(term + SAFETY));
    }
    Arrays.fill(thresholds, exponent, fast[1] + 1, 1);
  }

  /**
   * Element (row, col) of {@code up·down} in float64. Four partial sums keep the additions from
   * waiting on each other; any order gives the float64 sum to within a few float64 ulps, far
   * inside every margin this class tests against. On the vector path the four sums are the lanes
   * of one vector ({@link VectorRounding#dot}), with the same operations in the same order.
   */
  private double exactUpdate(int row, int col) {
    int u = row * rank;
    int d = col * rank;
    if (vectorBounds != null) {
      return VectorRounding.dot(up, u, downByColumn, d, rank);
    }
    double s0 = 0;
    double s1 = 0;
    double s2 = 0;
    double s3 = 0;
    int l = 0;
    for (; l + 3 < rank; l += 4) {
      s0 += up[u + l] * downByColumn[d + l];
      s1 += up[u + l + 1] * downByColumn[d + l + 1];
      s2 += up[u + l + 2] * downByColumn[d + l + 2];
      s3 += up[u + l + 3] * downByColumn[d + l + 3];
    }
    for (; l < rank; l++) {
      s0 += up[u + l] * downByColumn[d + l];
    }
    return (s0 + s1) + (s2 + s3);
  }

  /**
   * {@link FloatFormats#toFloat16} with the normal range done in a few integer operations on the
   * float64 bits (round half to even on the 42 dropped bits), and the subnormal range, where
   * weights near zero land, as the integer multiple of 2⁻²⁴ nearest to the value (the scaling is
   * exact and {@code rint} rounds half to even; 1024 is the smallest normal's bits).
   */
  private static short toFloat16(double value) {
    long raw = Double.doubleToRawLongBits(value);
    long magnitude = raw & Long.MAX_VALUE;
    int sign = (int) (raw >>> 48) & 0x8000;
    if (magnitude < DOUBLE_FLOAT16_MIN_NORMAL_BITS) {
      return (short) (sign | (int) Math.rint(Double.longBitsToDouble(magnitude) * 0x1p24));
    }
    if (magnitude >= DOUBLE_FLOAT16_OVERFLOW_BITS) {
      return FloatFormats.toFloat16(value);
    }
    long rounded = (magnitude - (1008L << 52) + ((1L << 41) - 1) + ((magnitude >>> 42) & 1)) >>> 42;
    return (short) (sign | (int) rounded);
  }

  /** {@link FloatFormats#toBFloat16}, likewise, on the 45 dropped bits. */
  private static short toBFloat16(double value) {
    long raw = Double.doubleToRawLongBits(value);
    long magnitude = raw & Long.MAX_VALUE;
    if (magnitude < DOUBLE_BFLOAT16_MIN_NORMAL_BITS || magnitude >= DOUBLE_BFLOAT16_OVERFLOW_BITS) {
      return FloatFormats.toBFloat16(value);
    }
    long rounded = (magnitude - (896L << 52) + ((1L << 44) - 1) + ((magnitude >>> 45) & 1)) >>> 45;
    return (short) ((int) (raw >>> 48) & 0x8000 | (int) rounded);
  }
}

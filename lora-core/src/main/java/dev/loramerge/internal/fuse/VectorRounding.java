package dev.loramerge.internal.fuse;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link NarrowFusion}'s fast path, a whole vector of elements at a time, with the incubating
 * Vector API: widen the fp16 or bf16 weight, add the float32 update, test the distance to the
 * nearest rounding boundary and round. C2 does not vectorize the scalar loop, so this class writes
 * the same steps with vectors.
 *
 * <p>The boundary test is the scalar one in float32 arithmetic that is exact: an element takes
 * the fast path when {@code (margin − (1 + 2⁻⁸))·ulp(s) > bound}, with {@code margin} the distance
 * to the nearest boundary in ulps of the float32 sum {@code s} (an integer below 2¹⁵, so the
 * subtraction is exact in float32) and {@code ulp(s)} a power of two. With {@code bound} at least
 * the row's float32 product error, that is {@code margin > bound/ulp + 1 + 2⁻⁸}, stricter than the
 * scalar test's {@code 1 + 2⁻¹⁰}: an element may go to float64 here and not there, which changes
 * nothing in the result.
 *
 * <p>Bits are reinterpreted with {@code reinterpretShape} and this class's species, never with
 * {@code reinterpretAsInts()} or {@code reinterpretAsFloats()}: those look the target species up
 * by lane type, a lookup C2 folds to a constant only while the process has used one vector shape.
 * Once the process runs vectors of other shapes (TIES' float-to-double kernel in a merge before
 * the fuse), the lookup stays a branch, the reinterpretation falls back to Java and every vector
 * after it is boxed. {@link VectorHalves} and the TIES kernel follow the same rule, and use the
 * same species per lane type as this class where they can, for the same reason: vectors of
 * another shape in the Vector API's shared methods make C2 box the vectors here too.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer
 * ({@code --add-modules jdk.incubator.vector}); {@link NarrowFusion} loads it only then, and uses
 * it only where {@link #pays}.
 */
final class VectorRounding {
  private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Integer> INTS = IntVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Double> DOUBLES = DoubleVector.SPECIES_256;
  private static final VectorSpecies<Short> SHORTS =
      VectorSpecies.of(short.class, VectorShape.forBitSize(FLOATS.vectorBitSize() / 2));
  /** The scalar test's 1 + 2⁻¹⁰ rounded up to a value that {@code margin − it} keeps exact. */
  private static final float MARGIN_SLACK = 1 + 0x1p-8f;

  private VectorRounding() {}

  /**
   * Whether the kernels pay here: vectors of at least 8 floats, and at most 32 lanes, which the
   * int of lane bits the kernels make for the slow lanes can hold.
   */
  static boolean pays() {
    return FLOATS.length() >= 8 && FLOATS.length() <= Integer.SIZE;
  }

  /**
   * Rounds {@code weights + delta} ({@code rows × cols} row-major: fp16 bits, or bf16 bits when
   * not {@code float16}, and float32) to bits of the same type in {@code out}. The kernels read and
   * write Java arrays only: a vector store into a ByteBuffer compiles into boxed vectors once the
   * process also stores vectors into heap buffers (a merge before the fuse).
   * Every element gets its fast-path result; the indices of the elements whose result must come
   * from float64 instead are written, in order, to {@code slow}, and their count is returned.
   * {@code bounds[firstRow + r]} is row r's absolute error bound of the float32 update.
   */
  static int round(
      boolean float16, short[] weights, float[] delta, short[] out, int rows, int cols, float[] bounds, int firstRow,
      int[] slow) {
    int slowCount = 0;
    for (int r = 0; r < rows; r++) {
      float bound = bounds[firstRow + r];
      slowCount = float16
          ? float16Row(weights, delta, out, r * cols, cols, bound, slow, slowCount)
          : bfloat16Row(weights, delta, out, r * cols, cols, bound, slow, slowCount);
    }
    return slowCount;
  }

  /**
   * One row. The row's bound is made a vector here, before the loop: broadcast in a loop around
   * the vector loop, it is boxed on JDK 17 and every vector with it. The slow lanes are found by
   * OR-ing lane bits ({@code VectorMask.toLong} allocates on JDK 17) and listed without a call,
   * which would box the vectors live across it.
   */
  private static int float16Row(short[] weights, float[] delta, short[] out, int base, int cols, float rowBound, int[] slow, int slowCount) {
    int lanes = FLOATS.length();
    int vectorCols = cols - cols % lanes;
    FloatVector bound = FloatVector.broadcast(FLOATS, rowBound);
    IntVector laneBits = IntVector.broadcast(INTS, 1).lanewise(VectorOperators.LSHL, IntVector.zero(INTS).addIndex(1));
    for (int c = 0; c < vectorCols; c += lanes) {
      int i = base + c;
      IntVector half = (IntVector) ShortVector.fromArray(SHORTS, weights, i).convertShape(VectorOperators.S2I, INTS, 0);
      IntVector halfMagnitude = half.and(0x7FFF);
      // The fp16 magnitude's bits shifted into float32 position read as 2¹¹² times its value,
      // subnormals included; fp16 infinities and NaN do not, and go to float64.
      FloatVector scaledWeight = ((FloatVector) halfMagnitude.lanewise(VectorOperators.LSHL, 13).reinterpretShape(FLOATS, 0)).mul(0x1p112f);
      IntVector weightBits = ((IntVector) scaledWeight.reinterpretShape(INTS, 0)).or(half.and(0x8000).lanewise(VectorOperators.LSHL, 16));
      IntVector raw = (IntVector) ((FloatVector) weightBits.reinterpretShape(FLOATS, 0)).add(FloatVector.fromArray(FLOATS, delta, i))
          .reinterpretShape(INTS, 0);
      IntVector magnitude = raw.and(0x7FFFFFFF);
      IntVector dropped = magnitude.and(0x1FFF);
      IntVector margin = dropped.sub(0x1000).abs().min(dropped.add(0x800));
      IntVector rounded = raw.lanewise(VectorOperators.LSHR, 16).and(0x8000)
          .or(magnitude.sub(0x38000000 - 0xFFF).add(magnitude.lanewise(VectorOperators.LSHR, 13).and(1))
              .lanewise(VectorOperators.LSHR, 13));
      ((ShortVector) rounded.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(out, i);
      // Clear of the boundary when margin ulps exceed the bound plus the slack: margin | 2²³ read
      // as a float is 2²³ + margin (JDK 17 does not compile int-to-float conversion into vector
      // code), and the ulp of a sum with exponent field E ≥ 24 is the normal float with field
      // E − 23. Written out here, not in a method: a method taking vectors that C2 compiles on its
      // own before this loop is too big to inline, and every vector crossing the call is boxed.
      FloatVector marginUlps = ((FloatVector) margin.or(0x4B000000).reinterpretShape(FLOATS, 0)).sub(0x1p23f).sub(MARGIN_SLACK);
      FloatVector ulp = (FloatVector) magnitude.and(0x7F800000).sub(23 << 23).reinterpretShape(FLOATS, 0);
      VectorMask<Integer> fast = marginUlps.mul(ulp).compare(VectorOperators.GT, bound).cast(INTS)
          .and(magnitude.compare(VectorOperators.GE, 113 << 23))
          .and(magnitude.compare(VectorOperators.LT, 142 << 23))
          .and(halfMagnitude.compare(VectorOperators.LT, 0x7C00));
      if (!fast.allTrue()) {
        int bits = laneBits.blend(0, fast).reduceLanes(VectorOperators.OR);
        while (bits != 0) {
          slow[slowCount++] = i + Integer.numberOfTrailingZeros(bits);
          bits &= bits - 1;
        }
      }
    }
    for (int c = vectorCols; c < cols; c++) {
      slow[slowCount++] = base + c;
    }
    return slowCount;
  }

  /** {@link #float16Row} for bf16. */
  private static int bfloat16Row(short[] weights, float[] delta, short[] out, int base, int cols, float rowBound, int[] slow, int slowCount) {
    int lanes = FLOATS.length();
    int vectorCols = cols - cols % lanes;
    FloatVector bound = FloatVector.broadcast(FLOATS, rowBound);
    IntVector laneBits = IntVector.broadcast(INTS, 1).lanewise(VectorOperators.LSHL, IntVector.zero(INTS).addIndex(1));
    for (int c = 0; c < vectorCols; c += lanes) {
      int i = base + c;
      IntVector weightBits = ((IntVector) ShortVector.fromArray(SHORTS, weights, i).convertShape(VectorOperators.S2I, INTS, 0))
          .lanewise(VectorOperators.LSHL, 16);
      IntVector raw = (IntVector) ((FloatVector) weightBits.reinterpretShape(FLOATS, 0)).add(FloatVector.fromArray(FLOATS, delta, i))
          .reinterpretShape(INTS, 0);
      IntVector magnitude = raw.and(0x7FFFFFFF);
      IntVector dropped = magnitude.and(0xFFFF);
      IntVector margin = dropped.sub(0x8000).abs().min(dropped.add(0x4000));
      IntVector rounded = raw.add(raw.lanewise(VectorOperators.LSHR, 16).and(1).add(0x7FFF)).lanewise(VectorOperators.LSHR, 16);
      ((ShortVector) rounded.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(out, i);
      // Infinite and NaN weights make infinite or NaN sums, outside the range tested here.
      // The boundary test of float16Row, written out here for the same reason.
      FloatVector marginUlps = ((FloatVector) margin.or(0x4B000000).reinterpretShape(FLOATS, 0)).sub(0x1p23f).sub(MARGIN_SLACK);
      FloatVector ulp = (FloatVector) magnitude.and(0x7F800000).sub(23 << 23).reinterpretShape(FLOATS, 0);
      VectorMask<Integer> fast = marginUlps.mul(ulp).compare(VectorOperators.GT, bound).cast(INTS)
          .and(magnitude.compare(VectorOperators.GE, 24 << 23))
          .and(magnitude.compare(VectorOperators.LT, 254 << 23));
      if (!fast.allTrue()) {
        int bits = laneBits.blend(0, fast).reduceLanes(VectorOperators.OR);
        while (bits != 0) {
          slow[slowCount++] = i + Integer.numberOfTrailingZeros(bits);
          bits &= bits - 1;
        }
      }
    }
    for (int c = vectorCols; c < cols; c++) {
      slow[slowCount++] = base + c;
    }
    return slowCount;
  }

  /**
   * Σ {@code a[from + l]·b[bFrom + l]} over l &lt; {@code length} in float64, with the very
   * operations of {@link NarrowFusion}'s scalar loop: four partial sums, term l into sum l mod 4
   * (a multiplication and an addition each, not fused), the terms after the last four into sum 0,
   * then (s₀ + s₁) + (s₂ + s₃). The four sums are the lanes of one 256-bit vector.
   */
  static double dot(double[] a, int from, double[] b, int bFrom, int length) {
    DoubleVector sums = DoubleVector.zero(DOUBLES);
    int l = 0;
    for (; l + 3 < length; l += 4) {
      sums = sums.add(DoubleVector.fromArray(DOUBLES, a, from + l).mul(DoubleVector.fromArray(DOUBLES, b, bFrom + l)));
    }
    double s0 = sums.lane(0);
    for (; l < length; l++) {
      s0 += a[from + l] * b[bFrom + l];
    }
    return (s0 + sums.lane(1)) + (sums.lane(2) + sums.lane(3));
  }
}

package dev.loramerge.internal.numeric;

import dev.loramerge.internal.fuse.Fusion;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link FloatFormats}' bulk conversions between float32 and fp16 or bf16, a vector at a time
 * with the incubating Vector API: the same bits as the scalar conversions, which C2 cannot
 * vectorize itself (neither a table read nor the branches of rounding).
 *
 * <p>Each method converts the longest prefix of whole vectors of {@code length} elements and
 * returns its length; the caller converts the rest. One method per format and direction, each
 * with its constants made before its loop: on JDK 17 a shared kernel with format branches, or a
 * broadcast inside a loop, is not compiled to vector code.
 *
 * <p>The kernels read and write Java arrays only; {@link FloatFormats} and {@link Fusion} copy
 * buffers through a short[] chunk for them. Vector loads and stores on ByteBuffers do not exist
 * after JDK 19 (JDK 20 replaced them with memory segments), so with them the library would fail
 * with {@code NoSuchMethodError} on a newer JDK given the module; and on JDK 17 they compile into
 * boxed vectors once the process also uses vectors on heap arrays.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link FloatFormats} loads it only then, and uses it only where {@link #pays}.
 */
public final class VectorHalves {
  private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Integer> INTS = IntVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Short> SHORTS =
      VectorSpecies.of(short.class, VectorShape.forBitSize(FLOATS.vectorBitSize() / 2));

  private VectorHalves() {}

  /** Whether vectors hold at least 8 floats here (AVX2 or wider). */
  public static boolean pays() {
    return FLOATS.length() >= 8;
  }

  /**
   * Where the scalar search for a non-finite fp16 or bf16 element (all ones in {@code exponent})
   * among the first {@code length} of {@code halves} must start: the first whole vector that has
   * one, else the end of the whole vectors.
   */
  public static int nonFiniteSearchStart(short[] halves, int length, short exponent) {
    int lanes = SHORTS.length();
    int whole = length - length % lanes;
    ShortVector mask = ShortVector.broadcast(SHORTS, exponent);
    for (int i = 0; i < whole; i += lanes) {
      if (ShortVector.fromArray(SHORTS, halves, i).and(mask).compare(VectorOperators.EQ, mask).anyTrue()) {
        return i;
      }
    }
    return whole;
  }

  /**
   * fp16 to float32, exactly, from {@code halves} into {@code out} from index {@code first};
   * infinities and NaN (quieted as the scalar path does) included.
   */
  public static int widenFloat16(short[] halves, int length, float[] out, int first) {
    int lanes = FLOATS.length();
    int done = length - length % lanes;
    for (int i = 0; i < done; i += lanes) {
      IntVector half = (IntVector) ShortVector.fromArray(SHORTS, halves, i).convertShape(VectorOperators.S2I, INTS, 0);
      IntVector magnitude = half.and(0x7fff);
      // The magnitude's bits in float position read as 2⁻¹¹² times the value, subnormals
      // included; fp16's all-ones exponent becomes float's, keeping the mantissa (infinity, NaN).
      FloatVector scaled = ((FloatVector) magnitude.lanewise(VectorOperators.LSHL, 13).reinterpretShape(FLOATS, 0)).mul(0x1p112f);
      IntVector finite = (IntVector) scaled.reinterpretShape(INTS, 0);
      IntVector special = magnitude.lanewise(VectorOperators.LSHL, 13).or(0x7f800000);
      IntVector bits = finite.blend(special, magnitude.compare(VectorOperators.GE, 0x7c00))
          .or(half.and(0x8000).lanewise(VectorOperators.LSHL, 16));
      ((FloatVector) bits.reinterpretShape(FLOATS, 0)).intoArray(out, first + i);
    }
    return done;
  }

  /**
   * {@code out} = fp16 of {@code first·a + second·b} for fp16 {@code a} and {@code b}, each product
   * and their sum rounded to float32 ({@link #widenFloat16}, then {@link #narrowFloat16} of the
   * sum), in one pass: the float32 values never leave the registers.
   */
  public static int sumFloat16(short[] a, float first, short[] b, float second, short[] out, int length) {
    int lanes = FLOATS.length();
    int done = length - length % lanes;
    FloatVector half = FloatVector.broadcast(FLOATS, 0.5f);
    for (int i = 0; i < done; i += lanes) {
      IntVector left = (IntVector) ShortVector.fromArray(SHORTS, a, i).convertShape(VectorOperators.S2I, INTS, 0);
      IntVector leftMagnitude = left.and(0x7fff);
      IntVector leftFinite = (IntVector) ((FloatVector) leftMagnitude.lanewise(VectorOperators.LSHL, 13).reinterpretShape(FLOATS, 0))
          .mul(0x1p112f).reinterpretShape(INTS, 0);
      IntVector leftBits = leftFinite
          .blend(leftMagnitude.lanewise(VectorOperators.LSHL, 13).or(0x7f800000), leftMagnitude.compare(VectorOperators.GE, 0x7c00))
          .or(left.and(0x8000).lanewise(VectorOperators.LSHL, 16));
      IntVector right = (IntVector) ShortVector.fromArray(SHORTS, b, i).convertShape(VectorOperators.S2I, INTS, 0);
      IntVector rightMagnitude = right.and(0x7fff);
      IntVector rightFinite = (IntVector) ((FloatVector) rightMagnitude.lanewise(VectorOperators.LSHL, 13).reinterpretShape(FLOATS, 0))
          .mul(0x1p112f).reinterpretShape(INTS, 0);
      IntVector rightBits = rightFinite
          .blend(rightMagnitude.lanewise(VectorOperators.LSHL, 13).or(0x7f800000), rightMagnitude.compare(VectorOperators.GE, 0x7c00))
          .or(right.and(0x8000).lanewise(VectorOperators.LSHL, 16));
      FloatVector sum = ((FloatVector) leftBits.reinterpretShape(FLOATS, 0)).mul(first)
          .add(((FloatVector) rightBits.reinterpretShape(FLOATS, 0)).mul(second));
      IntVector bits = (IntVector) sum.reinterpretShape(INTS, 0);
      IntVector magnitude = bits.and(0x7fffffff);
      IntVector normal = magnitude.sub((112 << 23) - 0xfff).add(magnitude.lanewise(VectorOperators.LSHR, 13).and(1))
          .lanewise(VectorOperators.LSHR, 13);
      IntVector subnormal = ((IntVector) ((FloatVector) magnitude.reinterpretShape(FLOATS, 0)).add(half).reinterpretShape(INTS, 0)).sub(0x3f000000);
      IntVector rounded = subnormal.blend(normal, magnitude.compare(VectorOperators.GE, 0x38800000))
          .blend(IntVector.broadcast(INTS, 0x7c00), magnitude.compare(VectorOperators.GE, 0x477ff000))
          .blend(IntVector.broadcast(INTS, 0x7e00), magnitude.compare(VectorOperators.GT, 0x7f800000))
          .or(bits.lanewise(VectorOperators.LSHR, 16).and(0x8000));
      ((ShortVector) rounded.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(out, i);
    }
    return done;
  }

  /**
   * {@code out[first, first + done)} = fp16 of {@code coefficient·halves}, the product rounded to
   * float32 ({@link #widenFloat16}, then {@link #narrowFloat16}), in one pass; returns {@code done}.
   */
  public static int scaleFloat16(short[] halves, float coefficient, short[] out, int first, int length) {
    int lanes = FLOATS.length();
    int done = length - length % lanes;
    FloatVector half = FloatVector.broadcast(FLOATS, 0.5f);
    for (int i = 0; i < done; i += lanes) {
      IntVector in = (IntVector) ShortVector.fromArray(SHORTS, halves, i).convertShape(VectorOperators.S2I, INTS, 0);
      IntVector inMagnitude = in.and(0x7fff);
      IntVector inFinite = (IntVector) ((FloatVector) inMagnitude.lanewise(VectorOperators.LSHL, 13).reinterpretShape(FLOATS, 0))
          .mul(0x1p112f).reinterpretShape(INTS, 0);
      IntVector inBits = inFinite
          .blend(inMagnitude.lanewise(VectorOperators.LSHL, 13).or(0x7f800000), inMagnitude.compare(VectorOperators.GE, 0x7c00))
          .or(in.and(0x8000).lanewise(VectorOperators.LSHL, 16));
      FloatVector product = ((FloatVector) inBits.reinterpretShape(FLOATS, 0)).mul(coefficient);
      IntVector bits = (IntVector) product.reinterpretShape(INTS, 0);
      IntVector magnitude = bits.and(0x7fffffff);
      IntVector normal = magnitude.sub((112 << 23) - 0xfff).add(magnitude.lanewise(VectorOperators.LSHR, 13).and(1))
          .lanewise(VectorOperators.LSHR, 13);
      IntVector subnormal = ((IntVector) ((FloatVector) magnitude.reinterpretShape(FLOATS, 0)).add(half).reinterpretShape(INTS, 0)).sub(0x3f000000);
      IntVector rounded = subnormal.blend(normal, magnitude.compare(VectorOperators.GE, 0x38800000))
          .blend(IntVector.broadcast(INTS, 0x7c00), magnitude.compare(VectorOperators.GE, 0x477ff000))
          .blend(IntVector.broadcast(INTS, 0x7e00), magnitude.compare(VectorOperators.GT, 0x7f800000))
          .or(bits.lanewise(VectorOperators.LSHR, 16).and(0x8000));
      ((ShortVector) rounded.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(out, first + i);
    }
    return done;
  }

  /** bf16 to float32, exactly, as {@link #widenFloat16}: the bits are float32's upper half. */
  public static int widenBFloat16(short[] halves, int length, float[] out, int first) {
    int lanes = FLOATS.length();
    int done = length - length % lanes;
    for (int i = 0; i < done; i += lanes) {
      IntVector bits = ((IntVector) ShortVector.fromArray(SHORTS, halves, i).convertShape(VectorOperators.S2I, INTS, 0))
          .lanewise(VectorOperators.LSHL, 16);
      ((FloatVector) bits.reinterpretShape(FLOATS, 0)).intoArray(out, first + i);
    }
    return done;
  }

  /**
   * float32 from index {@code first} of {@code in} to fp16 in {@code halves}, rounded once to
   * nearest even ({@link FloatFormats#toFloat16(float)}): the normal range by integer rounding on
   * the bits, subnormals by adding ½ in float, overflow to infinity, NaN to the quiet NaN 0x7e00
   * with the sign.
   */
  public static int narrowFloat16(float[] in, int first, short[] halves, int length) {
    int lanes = FLOATS.length();
    int done = length - length % lanes;
    FloatVector half = FloatVector.broadcast(FLOATS, 0.5f);
    for (int i = 0; i < done; i += lanes) {
      IntVector bits = (IntVector) FloatVector.fromArray(FLOATS, in, first + i).reinterpretShape(INTS, 0);
      IntVector magnitude = bits.and(0x7fffffff);
      IntVector normal = magnitude.sub((112 << 23) - 0xfff).add(magnitude.lanewise(VectorOperators.LSHR, 13).and(1))
          .lanewise(VectorOperators.LSHR, 13);
      IntVector subnormal = ((IntVector) ((FloatVector) magnitude.reinterpretShape(FLOATS, 0)).add(half).reinterpretShape(INTS, 0)).sub(0x3f000000);
      VectorMask<Integer> isNormal = magnitude.compare(VectorOperators.GE, 0x38800000);
      IntVector rounded = subnormal.blend(normal, isNormal)
          .blend(IntVector.broadcast(INTS, 0x7c00), magnitude.compare(VectorOperators.GE, 0x477ff000))
          .blend(IntVector.broadcast(INTS, 0x7e00), magnitude.compare(VectorOperators.GT, 0x7f800000))
          .or(bits.lanewise(VectorOperators.LSHR, 16).and(0x8000));
      ((ShortVector) rounded.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(halves, i);
    }
    return done;
  }

  /**
   * float32 to bf16 as {@link #narrowFloat16}, rounded once to nearest even ({@link
   * FloatFormats#toBFloat16(float)}); NaN to the quiet NaN 0x7fc0 with the sign.
   */
  public static int narrowBFloat16(float[] in, int first, short[] halves, int length) {
    int lanes = FLOATS.length();
    int done = length - length % lanes;
    for (int i = 0; i < done; i += lanes) {
      IntVector bits = (IntVector) FloatVector.fromArray(FLOATS, in, first + i).reinterpretShape(INTS, 0);
      IntVector rounded = bits.add(bits.lanewise(VectorOperators.LSHR, 16).and(1).add(0x7fff))
          .lanewise(VectorOperators.LSHR, 16);
      IntVector quietNaN = bits.lanewise(VectorOperators.LSHR, 16).and(0x8000).or(0x7fc0);
      rounded = rounded.blend(quietNaN, bits.and(0x7fffffff).compare(VectorOperators.GT, 0x7f800000));
      ((ShortVector) rounded.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(halves, i);
    }
    return done;
  }
}

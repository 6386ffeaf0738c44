package dev.loramerge.algorithms.internal;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link TaskTensors}' two-tensor TIES elect-and-merge and weighted sum, and DARE's random mask,
 * a vector at a time with the incubating Vector API: the scalar loops' float64 arithmetic lane by
 * lane (widen, vote, mask, add in the same order, halve, divide, round to float32) and the same
 * random draws, so the bits are the same, several times faster.
 *
 * <p>Elect-and-merge and the weighted sum need half-width floats to widen into whole double
 * vectors. The magnitude select's vector passes (lora-core's {@code VectorSelect}) use the
 * preferred species instead, the ones the fuse kernels use: on JDK 17 the Vector API's shared
 * methods keep one profile for every shape of a lane type.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link TaskTensors} loads it only then, and uses it only where {@link #pays}.
 */
final class VectorTies {
  private static final VectorSpecies<Double> DOUBLES = DoubleVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Float> FLOATS =
      VectorSpecies.of(float.class, VectorShape.forBitSize(DOUBLES.vectorBitSize() / 2));
  /** As many longs as {@link #DOUBLES} holds doubles, for DARE's random draws. */
  private static final VectorSpecies<Long> LONGS = VectorSpecies.of(long.class, DOUBLES.vectorShape());

  private VectorTies() {}

  /** Whether vectors hold at least 4 doubles here (AVX2 or wider). */
  static boolean pays() {
    return DOUBLES.length() >= 4;
  }

  /**
   * {@code TaskTensors.pruneRandomly} over the longest prefix of whole vectors; returns its
   * length. Lane j of the step at i draws {@link TaskTensors#splitMix}{@code (streamSeed, i + j +
   * 1)}, the value the scalar loop's SplittableRandom draws for entry i + j.
   */
  static int pruneRandomly(float[] tensor, double density, long streamSeed, long threshold) {
    int lanes = FLOATS.length();
    int done = tensor.length - tensor.length % lanes;
    long[] firstSeeds = new long[lanes];
    for (int j = 0; j < lanes; j++) {
      firstSeeds[j] = streamSeed + (j + 1) * TaskTensors.GOLDEN_GAMMA;
    }
    LongVector seeds = LongVector.fromArray(LONGS, firstSeeds, 0);
    LongVector step = LongVector.broadcast(LONGS, lanes * TaskTensors.GOLDEN_GAMMA);
    LongVector mix1 = LongVector.broadcast(LONGS, TaskTensors.MIX_1);
    LongVector mix2 = LongVector.broadcast(LONGS, TaskTensors.MIX_2);
    LongVector thresholds = LongVector.broadcast(LONGS, threshold);
    DoubleVector densities = DoubleVector.broadcast(DOUBLES, density);
    DoubleVector zero = DoubleVector.zero(DOUBLES);
    for (int i = 0; i < done; i += lanes) {
      LongVector z = seeds;
      z = z.lanewise(VectorOperators.XOR, z.lanewise(VectorOperators.LSHR, 30)).mul(mix1);
      z = z.lanewise(VectorOperators.XOR, z.lanewise(VectorOperators.LSHR, 27)).mul(mix2);
      z = z.lanewise(VectorOperators.XOR, z.lanewise(VectorOperators.LSHR, 31));
      VectorMask<Double> keep = z.lanewise(VectorOperators.LSHR, 11).compare(VectorOperators.LT, thresholds).cast(DOUBLES);
      DoubleVector x = (DoubleVector) FloatVector.fromArray(FLOATS, tensor, i).convertShape(VectorOperators.F2D, DOUBLES, 0);
      // A dropped entry is +0, as the scalar loop's mask of the bits leaves it.
      ((FloatVector) zero.blend(x.div(densities), keep).convertShape(VectorOperators.D2F, FLOATS, 0)).intoArray(tensor, i);
      seeds = seeds.add(step);
    }
    return done;
  }

  /**
   * {@code TaskTensors.weightedSum} of two tensors over the longest prefix of whole vectors, into
   * {@code sum}; returns the prefix's length, for the caller to sum the rest.
   */
  static int weightedSumTwo(
      float[] first, float[] second, double firstWeight, double secondWeight, float firstCut, float secondCut, float[] sum) {
    int lanes = FLOATS.length();
    int done = sum.length - sum.length % lanes;
    DoubleVector firstWeights = DoubleVector.broadcast(DOUBLES, firstWeight);
    DoubleVector secondWeights = DoubleVector.broadcast(DOUBLES, secondWeight);
    DoubleVector zero = DoubleVector.zero(DOUBLES);
    DoubleVector firstCuts = DoubleVector.broadcast(DOUBLES, firstCut);
    DoubleVector secondCuts = DoubleVector.broadcast(DOUBLES, secondCut);
    for (int i = 0; i < done; i += lanes) {
      DoubleVector x = (DoubleVector) FloatVector.fromArray(FLOATS, first, i).convertShape(VectorOperators.F2D, DOUBLES, 0);
      DoubleVector y = (DoubleVector) FloatVector.fromArray(FLOATS, second, i).convertShape(VectorOperators.F2D, DOUBLES, 0);
      x = x.blend(zero, x.abs().compare(VectorOperators.LT, firstCuts));
      y = y.blend(zero, y.abs().compare(VectorOperators.LT, secondCuts));
      // 0 + w₁x + w₂y, as the scalar loop adds from a total of +0.
      DoubleVector total = zero.add(x.mul(firstWeights)).add(y.mul(secondWeights));
      ((FloatVector) total.convertShape(VectorOperators.D2F, FLOATS, 0)).intoArray(sum, i);
    }
    return done;
  }

  /**
   * Merges the longest prefix of whole vectors into {@code merged} and returns its length; the
   * caller merges the rest. Constants are made before the loop: on JDK 17 a broadcast inside it
   * is not compiled to vector code.
   */
  static int electAndMergeTwo(
      float[] first,
      float[] second,
      double firstWeight,
      double secondWeight,
      float firstCut,
      float secondCut,
      float[] merged) {
    int lanes = FLOATS.length();
    int done = merged.length - merged.length % lanes;
    DoubleVector firstWeights = DoubleVector.broadcast(DOUBLES, firstWeight);
    DoubleVector secondWeights = DoubleVector.broadcast(DOUBLES, secondWeight);
    DoubleVector zero = DoubleVector.zero(DOUBLES);
    DoubleVector one = DoubleVector.broadcast(DOUBLES, 1.0);
    DoubleVector half = DoubleVector.broadcast(DOUBLES, 0.5);
    DoubleVector firstCuts = DoubleVector.broadcast(DOUBLES, firstCut);
    DoubleVector secondCuts = DoubleVector.broadcast(DOUBLES, secondCut);
    for (int i = 0; i < done; i += lanes) {
      DoubleVector x = (DoubleVector) FloatVector.fromArray(FLOATS, first, i).convertShape(VectorOperators.F2D, DOUBLES, 0);
      DoubleVector y = (DoubleVector) FloatVector.fromArray(FLOATS, second, i).convertShape(VectorOperators.F2D, DOUBLES, 0);
      // Below the cut is +0; NaN is not below it, as in the scalar loop.
      x = x.blend(zero, x.abs().compare(VectorOperators.LT, firstCuts));
      y = y.blend(zero, y.abs().compare(VectorOperators.LT, secondCuts));
      // Comparisons with NaN are false: a NaN sum votes negative, a NaN term never agrees.
      VectorMask<Double> positive = x.add(y).compare(VectorOperators.GE, 0.0);
      VectorMask<Double> takeX =
          x.compare(VectorOperators.GT, 0.0).and(positive).or(x.compare(VectorOperators.LT, 0.0).andNot(positive));
      VectorMask<Double> takeY =
          y.compare(VectorOperators.GT, 0.0).and(positive).or(y.compare(VectorOperators.LT, 0.0).andNot(positive));
      DoubleVector total = zero.add(zero.blend(x.mul(firstWeights), takeX)).add(zero.blend(y.mul(secondWeights), takeY));
      total = total.mul(one.blend(half, takeX.and(takeY)));
      ((FloatVector) total.convertShape(VectorOperators.D2F, FLOATS, 0)).intoArray(merged, i);
    }
    return done;
  }
}

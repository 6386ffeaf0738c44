package dev.loramerge.algorithms.internal;

import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.internal.select.MagnitudeSelect;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * The element-wise building blocks of PEFT's merge_utils on flat float arrays ("task tensors",
 * one per adapter): magnitude and random pruning, sign election and the disjoint mean. The
 * magnitude select is lora-core's {@link MagnitudeSelect}.
 * Deterministic: ties in magnitude go to the lower index, random masks come from the caller's
 * seeded stream.
 *
 * <p>Public only so that the JMH kernels of lora-bench can measure these loops on their own: the
 * package is exported to {@code dev.loramerge.bench} alone (see module-info). The merge methods are
 * the API.
 */
public final class TaskTensors {
  /** Magnitude bits above these are NaN. */
  private static final int INFINITY_BITS = Float.floatToRawIntBits(Float.POSITIVE_INFINITY);
  private static final long ONE_BITS = Double.doubleToRawLongBits(1.0);

  /**
   * Whether the two-tensor TIES merge and weighted sum and the DARE mask run on the Vector API:
   * the module {@code jdk.incubator.vector} is in the boot layer and vectors are wide enough.
   */
  static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorTies.pays();
  private static final long DOUBLE_INFINITY_BITS = Double.doubleToRawLongBits(Double.POSITIVE_INFINITY);
  /** SplitMix64's increment and multipliers (Steele, Lea and Flood 2014; Stafford's variant 13). */
  static final long GOLDEN_GAMMA = 0x9e3779b97f4a7c15L;
  static final long MIX_1 = 0xbf58476d1ce4e5b9L;
  static final long MIX_2 = 0x94d049bb133111ebL;
  /** Whether this JDK's SplittableRandom draws {@link #splitMix}, so that lanes can draw it too. */
  static final boolean SPLITMIX_STREAMS = splitMixStreams();

  private TaskTensors() {}

  /**
   * Keeps the ⌊density·n⌋ entries of largest magnitude and zeroes the rest, in place (PEFT's
   * {@code magnitude_based_pruning}); see {@link MagnitudeSelect#keepLargest}.
   */
  public static void pruneByMagnitude(float[] tensor, double density) {
    MagnitudeSelect.keepLargest(tensor, (int) (density * tensor.length));
  }

  /** Applies a {@link #magnitudeCut} to the tensor itself (nothing to do for a cut of 0). */
  private static void cutInPlace(float[] tensor, int cutBits) {
    if (cutBits != 0) {
      for (int i = 0; i < tensor.length; i++) {
        tensor[i] = MagnitudeSelect.cut(tensor[i], cutBits);
      }
    }
  }

  /**
   * {@link #pruneByMagnitude} for a caller that applies the cut as it reads the tensor: {@link
   * MagnitudeSelect#magnitudeCut} keeping ⌊density·n⌋ entries.
   */
  public static float magnitudeCut(float[] tensor, double density) {
    return MagnitudeSelect.magnitudeCut(tensor, (int) (density * tensor.length));
  }

  /**
   * Keeps each entry with probability {@code density} and divides the kept ones by it, in place
   * (DARE, Yu et al. 2023, eq. 2; PEFT's {@code random_pruning} with rescale): entry i is kept
   * where the (i+1)-th {@code nextDouble()} of {@code new SplittableRandom(streamSeed)} is below
   * {@code density}.
   */
  public static void pruneRandomly(float[] tensor, double density, long streamSeed) {
    pruneRandomly(tensor, density, streamSeed, VECTOR_API && SPLITMIX_STREAMS);
  }

  /** {@link #pruneRandomly(float[], double, long)} with or without the Vector API. */
  static void pruneRandomly(float[] tensor, double density, long streamSeed, boolean vectorized) {
    // nextDouble() is (nextLong() >>> 11)·2⁻⁵³, so "nextDouble() < density" is "that integer <
    // ⌈density·2⁵³⌉": the same draws, compared without a branch, which at density ½ would be
    // mispredicted every other element.
    long threshold = (long) Math.ceil(density * 0x1p53);
    int done = vectorized ? VectorTies.pruneRandomly(tensor, density, streamSeed, threshold) : 0;
    SplittableRandom random = new SplittableRandom(streamSeed + done * GOLDEN_GAMMA);
    for (int i = done; i < tensor.length; i++) {
      int keep = (int) (((random.nextLong() >>> 11) - threshold) >> 63);
      tensor[i] = Float.intBitsToFloat(Float.floatToRawIntBits((float) (tensor[i] / density)) & keep);
    }
  }

  /**
   * SplitMix64's output for the n-th draw (from 1) of a stream seeded with {@code seed}: the seed
   * plus n times the golden gamma, mixed by Stafford's variant 13. OpenJDK's {@code
   * SplittableRandom(seed).nextLong()} has drawn this since JDK 8, which {@link
   * #SPLITMIX_STREAMS} checks before the vector kernel, which draws it lane by lane, is used.
   */
  static long splitMix(long seed, long n) {
    long z = seed + n * GOLDEN_GAMMA;
    z = (z ^ (z >>> 30)) * MIX_1;
    z = (z ^ (z >>> 27)) * MIX_2;
    return z ^ (z >>> 31);
  }

  private static boolean splitMixStreams() {
    SplittableRandom random = new SplittableRandom(0x5eedL);
    for (int n = 1; n <= 64; n++) {
      if (random.nextLong() != splitMix(0x5eedL, n)) {
        return false;
      }
    }
    return true;
  }

  /** Σ λᵢ·Tᵢ. */
  public static float[] weightedSum(float[][] tensors, double[] weights) {
    return weightedSum(tensors, weights, new float[tensors.length]);
  }

  /** Σ λᵢ·Tᵢ with each Tᵢ cut at {@code cuts[i]} as it is read (see {@link #magnitudeCut}). */
  public static float[] weightedSum(float[][] tensors, double[] weights, float[] cuts) {
    return weightedSum(tensors, weights, cuts, VECTOR_API);
  }

  /**
   * {@link #weightedSum(float[][], double[], float[])}, two tensors a vector at a time where
   * {@code vectorized}: the same float64 products and additions lane by lane, so the same bits.
   */
  static float[] weightedSum(float[][] tensors, double[] weights, float[] cuts, boolean vectorized) {
    int[] cutBits = bitsOf(cuts);
    float[] sum = new float[tensors[0].length];
    int done =
        vectorized && tensors.length == 2
            ? VectorTies.weightedSumTwo(tensors[0], tensors[1], weights[0], weights[1], cuts[0], cuts[1], sum)
            : 0;
    for (int i = done; i < sum.length; i++) {
      double total = 0;
      for (int t = 0; t < tensors.length; t++) {
        total += weights[t] * MagnitudeSelect.cut(tensors[t][i], cutBits[t]);
      }
      sum[i] = (float) total;
    }
    return sum;
  }

  /**
   * TIES' elect and disjoint merge (Yadav et al. 2023, §3; PEFT's {@code disjoint_merge}): the
   * elected sign per entry comes from the unweighted tensors, and the weighted entries that agree
   * with it are summed and divided by their count (at least 1).
   */
  public static float[] electAndMerge(float[][] tensors, double[] weights, MajoritySign method) {
    return electAndMerge(tensors, weights, method, new float[tensors.length]);
  }

  /**
   * {@link #electAndMerge(float[][], double[], MajoritySign)} with each tensor cut at {@code
   * cuts[i]} as it is read (see {@link #magnitudeCut}); the tensors may be cut in place.
   */
  public static float[] electAndMerge(float[][] tensors, double[] weights, MajoritySign method, float[] cuts) {
    if (tensors.length == 2 && method == MajoritySign.TOTAL) {
      return electAndMergeTwo(tensors[0], tensors[1], weights[0], weights[1], cuts[0], cuts[1], VECTOR_API);
    }
    for (int t = 0; t < tensors.length; t++) {
      cutInPlace(tensors[t], Float.floatToRawIntBits(cuts[t]));
    }
    float[] merged = new float[tensors[0].length];
    for (int i = 0; i < merged.length; i++) {
      double votes = 0;
      for (float[] tensor : tensors) {
        votes += method == MajoritySign.TOTAL ? tensor[i] : Math.signum(tensor[i]);
      }
      float elected = votes >= 0 ? 1f : -1f;
      double total = 0;
      int agreeing = 0;
      for (int t = 0; t < tensors.length; t++) {
        if (Math.signum(tensors[t][i]) == elected) {
          total += weights[t] * tensors[t][i];
          agreeing++;
        }
      }
      merged[i] = (float) (total / Math.max(1, agreeing));
    }
    return merged;
  }

  /**
   * {@link #electAndMerge} for the common case of two tensors and a total-mass vote, without the
   * inner loops, {@code signum} calls and divisions: the same additions in the same order, and
   * halving (exact) where the general loop divides by two, so the result is identical. After
   * pruning half the entries are zero, so which ones agree is random: the terms are masked in or
   * out on their bits, as branches would be mispredicted every other entry (most of ties_svd's
   * time).
   */
  static float[] electAndMergeTwo(
      float[] first,
      float[] second,
      double firstWeight,
      double secondWeight,
      float firstCut,
      float secondCut,
      boolean vectorized) {
    float[] merged = new float[first.length];
    int done =
        vectorized ? VectorTies.electAndMergeTwo(first, second, firstWeight, secondWeight, firstCut, secondCut, merged) : 0;
    int firstCutBits = Float.floatToRawIntBits(firstCut);
    int secondCutBits = Float.floatToRawIntBits(secondCut);
    for (int i = done; i < merged.length; i++) {
      float x = MagnitudeSelect.cut(first[i], firstCutBits);
      float y = MagnitudeSelect.cut(second[i], secondCutBits);
      // The vote, x + y ≥ 0 (false for NaN), and each term's agreement, on bits: written with
      // comparisons, C2 compiles them to branches all the same. A sum of −0 needs two zeros,
      // which no vote takes, so its sign bit may count as negative.
      long sum = Double.doubleToRawLongBits((double) x + y);
      long notNaN = 1 - ((DOUBLE_INFINITY_BITS - (sum & 0x7fffffffffffffffL)) >>> 63);
      long positive = notNaN & (1 - (sum >>> 63));
      int xBits = Float.floatToRawIntBits(x);
      int yBits = Float.floatToRawIntBits(y);
      long takeX = -(nonZeroNumber(xBits) & ((xBits >>> 31) ^ positive));
      long takeY = -(nonZeroNumber(yBits) & ((yBits >>> 31) ^ positive));
      double termX = Double.longBitsToDouble(Double.doubleToRawLongBits(firstWeight * x) & takeX);
      double termY = Double.longBitsToDouble(Double.doubleToRawLongBits(secondWeight * y) & takeY);
      // 0 + x + y as the general loop adds; a term left out is +0, which adds nothing. Halving
      // is multiplying by 2⁰ or 2⁻¹, chosen on the exponent's bits.
      double total = 0.0 + termX + termY;
      merged[i] = (float) (total * Double.longBitsToDouble(ONE_BITS - (takeX & takeY & (1L << 52))));
    }
    return merged;
  }

  private static int[] bitsOf(float[] cuts) {
    int[] bits = new int[cuts.length];
    for (int i = 0; i < cuts.length; i++) {
      bits[i] = Float.floatToRawIntBits(cuts[i]);
    }
    return bits;
  }

  /** 1 when the float with these bits is neither zero nor NaN, else 0. */
  private static int nonZeroNumber(int bits) {
    int magnitude = bits & 0x7fffffff;
    return ((-magnitude) >>> 31) & ((magnitude - INFINITY_BITS - 1) >>> 31);
  }

  /**
   * Model Breadcrumbs (Davari and Belilovsky 2023; mergekit's {@code magnitude_outliers}): drops
   * the ⌊gamma·n⌋ entries of largest magnitude as outliers and keeps the next ⌊density·n⌋; when
   * gamma + density exceeds 1, fewer outliers are dropped so that density·n remain. In place.
   */
  public static void pruneBreadcrumbs(float[] tensor, double density, double gamma) {
    int n = tensor.length;
    int keep = (int) (density * n);
    int top = Math.min((int) (gamma * n), n - keep);
    // The outliers are the top entries of the kept-or-outlier set; both come from the magnitude
    // select, with the same order among equal magnitudes (the first ranks higher).
    float[] outliers = top == 0 ? null : tensor.clone();
    MagnitudeSelect.keepLargest(tensor, top + keep);
    if (outliers != null) {
      MagnitudeSelect.keepLargest(outliers, top);
      for (int i = 0; i < n; i++) {
        if (outliers[i] != 0) {
          tensor[i] = 0;
        }
      }
    }
  }

  /**
   * DELLA's MagPrune (Deep et al. 2024, §3; mergekit's {@code della}): in each row, entries ranked
   * by magnitude are kept with probability rising linearly from density − ε (smallest) to
   * density + ε (largest), and kept entries are divided by their probability. In place.
   */
  public static void pruneDella(float[] tensor, int rowLength, double density, double epsilon, SplittableRandom random) {
    int[] byMagnitude = new int[rowLength];
    int[] scratch = new int[rowLength];
    int[] magnitudes = new int[rowLength];
    int[] counts = new int[RADIX];
    RankProbabilities rows = new RankProbabilities(rowLength, density, epsilon);
    for (int start = 0; start < tensor.length; start += rowLength) {
      int length = Math.min(rowLength, tensor.length - start);
      RankProbabilities byRank = length == rowLength ? rows : new RankProbabilities(length, density, epsilon);
      for (int i = 0; i < length; i++) {
        magnitudes[i] = Float.floatToRawIntBits(tensor[start + i]) & 0x7FFFFFFF;
      }
      sortByMagnitude(magnitudes, length, byMagnitude, scratch, counts);
      for (int rank = 0; rank < byRank.firstDrawn; rank++) {
        tensor[start + byMagnitude[rank]] = 0f;
      }
      // As in pruneRandomly, "nextDouble() < p" is "nextLong() >>> 11 < ⌈p·2⁵³⌉", kept without a
      // branch that the draws would mispredict.
      for (int rank = byRank.firstDrawn; rank < length; rank++) {
        int index = start + byMagnitude[rank];
        int keep = (int) (((random.nextLong() >>> 11) - byRank.thresholds[rank]) >> 63);
        tensor[index] = Float.intBitsToFloat(Float.floatToRawIntBits((float) (tensor[index] / byRank.probabilities[rank])) & keep);
      }
    }
  }

  /**
   * DELLA's keep probability of each rank in a row of {@code length}, smallest magnitude first,
   * as ⌈p·2⁵³⌉ too, and the first rank whose probability is above 0: ranks below it are dropped
   * without a draw. The probability rises with the rank, so those are the only ones at 0.
   */
  private static final class RankProbabilities {
    final double[] probabilities;
    final long[] thresholds;
    final int firstDrawn;

    RankProbabilities(int length, double density, double epsilon) {
      probabilities = new double[length];
      thresholds = new long[length];
      int zero = 0;
      for (int rank = 0; rank < length; rank++) {
        double probability = length == 1 ? density : density - epsilon + 2 * epsilon * rank / (double) (length - 1);
        probabilities[rank] = Math.min(1, Math.max(0, probability));
        thresholds[rank] = (long) Math.ceil(probabilities[rank] * 0x1p53);
        zero += probabilities[rank] > 0 ? 0 : 1;
      }
      firstDrawn = zero;
    }
  }

  /** Bits per pass of the row sort, and buckets per pass. */
  private static final int RADIX_BITS = 8;
  private static final int RADIX = 1 << RADIX_BITS;

  /**
   * Fills {@code order[0, length)} with the positions 0 … length − 1 by increasing magnitude,
   * equal magnitudes in increasing position: a stable least-significant-digit radix sort of the
   * 31 magnitude bits, 8 at a time, a pass skipped where every entry has the same digit: linear
   * in the row, where sorting (magnitude, position) longs compares and mispredicts its way
   * through log₂ n levels.
   */
  private static void sortByMagnitude(int[] magnitudes, int length, int[] order, int[] scratch, int[] counts) {
    for (int i = 0; i < length; i++) {
      order[i] = i;
    }
    int[] from = order;
    int[] to = scratch;
    for (int shift = 0; shift < Integer.SIZE - 1; shift += RADIX_BITS) {
      Arrays.fill(counts, 0);
      for (int i = 0; i < length; i++) {
        counts[(magnitudes[i] >>> shift) & (RADIX - 1)]++;
      }
      if (counts[(magnitudes[0] >>> shift) & (RADIX - 1)] == length) {
        continue;
      }
      int total = 0;
      for (int digit = 0; digit < RADIX; digit++) {
        int count = counts[digit];
        counts[digit] = total;
        total += count;
      }
      for (int i = 0; i < length; i++) {
        int position = from[i];
        to[counts[(magnitudes[position] >>> shift) & (RADIX - 1)]++] = position;
      }
      int[] swap = from;
      from = to;
      to = swap;
    }
    if (from != order) {
      System.arraycopy(from, 0, order, 0, length);
    }
  }
}

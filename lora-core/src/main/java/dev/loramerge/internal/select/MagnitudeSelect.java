package dev.loramerge.internal.select;

import java.util.Arrays;

/**
 * Keeps the k entries of largest magnitude of a float array: a two-pass radix select on the
 * magnitudes' bit patterns, then a cut on bits. Of equal magnitudes, the first in order are kept;
 * NaN is never kept; a kept entry keeps its bits and a dropped one becomes +0. The one top-k
 * kernel of the library: magnitude pruning of task tensors, Breadcrumbs' outliers, and the
 * pruning of merged factors.
 *
 * <p>Public only for the other modules of the library; not an API.
 */
public final class MagnitudeSelect {
  /** Magnitude bits above these are NaN. */
  private static final int INFINITY_BITS = Float.floatToRawIntBits(Float.POSITIVE_INFINITY);

  /**
   * Whether the select's second pass and its search for excess ties run on the Vector API: the
   * module {@code jdk.incubator.vector} is in the boot layer and vectors are wide enough.
   */
  public static final boolean VECTOR_API =
      ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent() && VectorSelect.pays();

  private MagnitudeSelect() {}

  /**
   * Keeps the {@code keep} entries of largest magnitude (of equal ones, the first) and sets the
   * others to +0, in place.
   */
  public static void keepLargest(float[] tensor, int keep) {
    int cutBits = Float.floatToRawIntBits(magnitudeCut(tensor, keep, VECTOR_API));
    if (cutBits != 0) {
      for (int i = 0; i < tensor.length; i++) {
        tensor[i] = cut(tensor[i], cutBits);
      }
    }
  }

  /**
   * {@link #keepLargest} for a caller that applies the cut as it reads the tensor, a pass fewer
   * over memory: returns the magnitude below which entries are to be taken as zero ({@link #cut}).
   * Where more entries equal the k-th largest magnitude than may be kept, the last of them in
   * order are set to +0 here, so that the cut keeps exactly the right entries. Where the tensor
   * has an infinity or NaN, whose counts the selection does not give, it is pruned here and the
   * cut is 0, which keeps everything.
   */
  public static float magnitudeCut(float[] tensor, int keep) {
    return magnitudeCut(tensor, keep, VECTOR_API);
  }

  /** {@link #magnitudeCut(float[], int)}, its vector passes on the Vector API or not. */
  public static float magnitudeCut(float[] tensor, int keep, boolean vectorized) {
    if (keep >= tensor.length) {
      return 0;
    }
    if (keep <= 0) {
      Arrays.fill(tensor, 0);
      return 0;
    }
    Selection selection = select(tensor, keep, vectorized);
    int thresholdBits = selection.thresholdBits;
    if (selection.strictlyAbove >= 0) {
      // A large SDXL delta has more entries at its threshold than may be kept about one time in
      // three, usually one or two too many. Finding those from the end takes a fraction of a
      // vector pass, where pruning the whole tensor here would take two scalar passes.
      int excess = selection.ties - (keep - selection.strictlyAbove);
      if (excess > 0) {
        dropLastTies(tensor, thresholdBits, excess, vectorized);
      }
      return Float.intBitsToFloat(thresholdBits);
    }
    int strictlyAbove = 0;
    int ties = 0;
    for (float value : tensor) {
      int magnitude = Float.floatToRawIntBits(value) & 0x7FFFFFFF;
      int finite = (magnitude - INFINITY_BITS - 1) >>> 31;
      strictlyAbove += ((thresholdBits - magnitude) >>> 31) & finite;
      ties += ((magnitude ^ thresholdBits) - 1) >>> 31;
    }
    int tiesToKeep = keep - strictlyAbove;
    // On bits: with branches these loops would mispredict about one branch per entry. Integer
    // order is float order for magnitudes; NaN (above infinity) is never kept, as with float
    // comparisons.
    for (int i = 0; i < tensor.length; i++) {
      int bits = Float.floatToRawIntBits(tensor[i]);
      int magnitude = bits & 0x7FFFFFFF;
      int finite = (magnitude - INFINITY_BITS - 1) >>> 31;
      int above = ((thresholdBits - magnitude) >>> 31) & finite;
      int tie = (((magnitude ^ thresholdBits) - 1) >>> 31) & finite & (-tiesToKeep >>> 31);
      tiesToKeep -= tie;
      tensor[i] = Float.intBitsToFloat(bits & -(above | tie));
    }
    return 0;
  }

  /**
   * {@code value}, or +0 when its magnitude's bits are below {@code cutBits} (a non-negative
   * float's); NaN stays. On bits because half the entries go either way at random: a branch,
   * mispredicted about once per entry, would make the zeroing pass most of magnitude_prune_svd's
   * time.
   */
  public static float cut(float value, int cutBits) {
    int bits = Float.floatToRawIntBits(value);
    return Float.intBitsToFloat(bits & ~(((bits & 0x7FFFFFFF) - cutBits) >> 31));
  }

  /**
   * The k-th largest |x| (1-based), by a two-pass radix select on the magnitudes' bit patterns
   * (for non-negative floats, integer order is float order): a histogram of the upper 16 bits finds
   * the bucket that holds it, a histogram of the lower 16 bits within that bucket finds it exactly.
   * Two sequential passes, no copy: quickselect's random access would dominate magnitude pruning
   * on SDXL-sized deltas, and a sampled bracket with one counting pass cannot skip enough of the
   * vectors, too many of which hold a candidate.
   */
  public static float kthLargestMagnitude(float[] tensor, int k) {
    return kthLargestMagnitude(tensor, k, VECTOR_API);
  }

  /** {@link #kthLargestMagnitude(float[], int)}, its second pass on the Vector API or not. */
  public static float kthLargestMagnitude(float[] tensor, int k, boolean vectorized) {
    return Float.intBitsToFloat(select(tensor, k, vectorized).thresholdBits);
  }

  /**
   * Sets the last {@code excess} entries whose magnitude's bits are {@code magnitudeBits} to +0;
   * the tensor has at least that many.
   */
  private static void dropLastTies(float[] tensor, int magnitudeBits, int excess, boolean vectorized) {
    int end = tensor.length;
    for (int dropped = 0; dropped < excess; dropped++) {
      if (vectorized) {
        end = VectorSelect.endOfLastVectorWith(tensor, end, magnitudeBits);
      }
      do {
        end--;
      } while ((Float.floatToRawIntBits(tensor[end]) & 0x7FFFFFFF) != magnitudeBits);
      tensor[end] = 0;
    }
  }

  /**
   * The k-th largest magnitude's bits, with how many magnitudes lie strictly above it and how
   * many equal it, both read off the histograms (a pass fewer for the pruning); the counts are
   * −1 when the tensor has an infinity or NaN, whose place among the counts the caller decides.
   */
  private record Selection(int thresholdBits, int strictlyAbove, int ties) {}

  private static Selection select(float[] tensor, int k, boolean vectorized) {
    int[] upper = new int[1 << 16];
    for (float value : tensor) {
      upper[(Float.floatToRawIntBits(value) & 0x7FFFFFFF) >>> 16]++;
    }
    int remaining = k;
    int upperBucket = upper.length - 1;
    int above = 0;
    while (upper[upperBucket] < remaining) {
      remaining -= upper[upperBucket];
      above += upper[upperBucket];
      upperBucket--;
    }
    int[] lower = new int[1 << 16];
    countBucket(tensor, vectorized ? VectorSelect.countBucket(tensor, upperBucket, lower) : 0, tensor.length, upperBucket, lower);
    int lowerBucket = lower.length - 1;
    while (lower[lowerBucket] < remaining) {
      remaining -= lower[lowerBucket];
      above += lower[lowerBucket];
      lowerBucket--;
    }
    boolean finite = true;
    for (int bucket = INFINITY_BITS >>> 16; bucket < upper.length; bucket++) {
      finite &= upper[bucket] == 0;
    }
    int thresholdBits = upperBucket << 16 | lowerBucket;
    return finite ? new Selection(thresholdBits, above, lower[lowerBucket]) : new Selection(thresholdBits, -1, -1);
  }

  /**
   * Counts the low 16 bits of each magnitude in [{@code from}, {@code to}) whose upper 16 bits
   * are {@code upperBucket} into {@code lower}.
   */
  static void countBucket(float[] tensor, int from, int to, int upperBucket, int[] lower) {
    for (int i = from; i < to; i++) {
      int bits = Float.floatToRawIntBits(tensor[i]) & 0x7FFFFFFF;
      if (bits >>> 16 == upperBucket) {
        lower[bits & 0xFFFF]++;
      }
    }
  }
}

package dev.loramerge.internal.select;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link MagnitudeSelect}'s vector passes with the incubating Vector API: the same counts and the
 * same searches as the scalar loops, a vector at a time.
 *
 * <p>They use the preferred float and int species, the ones the fuse kernels use ({@code
 * VectorRounding}): on JDK 17 the Vector API's shared methods keep one profile for every shape of
 * a lane type, and a radix pass on 256-bit ints beside the fuse kernels' 512-bit ones makes C2
 * compile the fuse's rounding with boxed vectors, which doubles the time of an in-memory fuse that
 * follows a merge in the same process.
 *
 * <p>Referencing this class needs the module {@code jdk.incubator.vector} in the boot layer;
 * {@link MagnitudeSelect} loads it only then, and uses it only where {@link #pays}.
 */
final class VectorSelect {
  private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
  private static final VectorSpecies<Integer> INTS = IntVector.SPECIES_PREFERRED;

  private VectorSelect() {}

  /** Whether vectors hold at least 4 doubles here (AVX2 or wider), as the merge kernels ask. */
  static boolean pays() {
    return DoubleVector.SPECIES_PREFERRED.length() >= 4;
  }

  /**
   * The radix selection's second pass over the longest prefix of whole vectors: counts the low
   * 16 bits of each magnitude whose upper 16 bits are {@code upperBucket} into {@code lower};
   * returns the prefix's length, for the caller to count the rest. A few hundredths of the
   * entries fall in the bucket, so most vectors have none and cost one comparison.
   */
  static int countBucket(float[] tensor, int upperBucket, int[] lower) {
    int lanes = FLOATS.length();
    int whole = tensor.length - tensor.length % lanes;
    IntVector bucket = IntVector.broadcast(INTS, upperBucket);
    for (int i = 0; i < whole; i += lanes) {
      IntVector upper = ((IntVector) FloatVector.fromArray(FLOATS, tensor, i).reinterpretShape(INTS, 0)).lanewise(VectorOperators.AND, 0x7FFFFFFF).lanewise(VectorOperators.LSHR, 16);
      if (upper.compare(VectorOperators.EQ, bucket).anyTrue()) {
        MagnitudeSelect.countBucket(tensor, i, i + lanes, upperBucket, lower);
      }
    }
    return whole;
  }

  /**
   * Where the scalar search for the last entry before {@code end} whose magnitude's bits are
   * {@code magnitudeBits} is to start: the end of the last whole vector below {@code end} that
   * holds one, scanning down, or the end of the fewer than a vector's entries left at the front.
   */
  static int endOfLastVectorWith(float[] tensor, int end, int magnitudeBits) {
    int lanes = FLOATS.length();
    IntVector wanted = IntVector.broadcast(INTS, magnitudeBits);
    int start = end - lanes;
    for (; start >= 0; start -= lanes) {
      IntVector magnitude = ((IntVector) FloatVector.fromArray(FLOATS, tensor, start).reinterpretShape(INTS, 0)).lanewise(VectorOperators.AND, 0x7FFFFFFF);
      if (magnitude.compare(VectorOperators.EQ, wanted).anyTrue()) {
        break;
      }
    }
    return start + lanes;
  }
}

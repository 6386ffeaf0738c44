package dev.loramerge.internal.linalg;

import java.nio.charset.StandardCharsets;
import java.util.SplittableRandom;

/** Seeded, order-independent randomness: every stream is keyed by what it is for. */
public final class Randoms {
  private Randoms() {}

  /**
   * A seed for one random stream, from the merge seed, the module, the adapter and the stream's
   * name: FNV-1a over the parts, finished with a SplitMix64 step so that nearby inputs give
   * unrelated seeds. Order, threads and device do not enter.
   */
  public static long streamSeed(long seed, String module, int adapterIndex, String stream) {
    long hash = 0xcbf29ce484222325L;
    hash = fnv(hash, Long.toString(seed));
    hash = fnv(hash, "\u0000" + module + "\u0000" + adapterIndex + "\u0000" + stream);
    return mix(hash);
  }

  private static long fnv(long hash, String text) {
    for (byte b : text.getBytes(StandardCharsets.UTF_8)) {
      hash = (hash ^ (b & 0xff)) * 0x100000001b3L;
    }
    return hash;
  }

  private static long mix(long z) {
    z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
    z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
    return z ^ (z >>> 31);
  }

  /** A standard normal draw (Box–Muller; SplittableRandom has no nextGaussian on Java 17). */
  public static double standardNormal(SplittableRandom random) {
    double u = 1 - random.nextDouble();
    double v = random.nextDouble();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

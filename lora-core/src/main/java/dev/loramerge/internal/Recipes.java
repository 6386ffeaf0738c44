package dev.loramerge.internal;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.function.Supplier;

/** The provenance written into outputs, and the seeds derived from it. */
public final class Recipes {
  private Recipes() {}

  /** The library version from the jar manifest, or "development" when run from classes. */
  public static String libraryVersion() {
    String version = Recipes.class.getPackage().getImplementationVersion();
    return version == null ? "development" : version;
  }

  /** {@code recipe} as compact JSON. */
  public static String toJson(Supplier<Map<String, Object>> recipe) {
    try {
      return Json.write(recipe.get(), false);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

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
}

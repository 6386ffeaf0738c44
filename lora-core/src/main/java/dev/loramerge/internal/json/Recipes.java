package dev.loramerge.internal.json;

import java.io.IOException;
import java.io.UncheckedIOException;
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
}

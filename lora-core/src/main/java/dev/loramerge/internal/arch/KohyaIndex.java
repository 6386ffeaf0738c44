package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.ModuleSpec;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;

/**
 * kohya's module names for one descriptor, both ways: the name kohya's scripts write for each
 * module, and every spelling that is accepted when reading.
 *
 * <p>kohya names are paths with {@code .} replaced by {@code _}, which cannot be undone by rule
 * ({@code to_out_0}, {@code ff_net_0_proj}, {@code text_model} all hold underscores). So reading
 * is an exact lookup in a table built from the descriptor's own paths, and building the table
 * fails if two modules would share a spelling: a name resolves to one module or to none.
 */
final class KohyaIndex {
  private final ImmutableMap<ModuleKey, String> written;
  private final ImmutableMap<String, ModuleKey> accepted;

  private KohyaIndex(ImmutableMap<ModuleKey, String> written, ImmutableMap<String, ModuleKey> accepted) {
    this.written = written;
    this.accepted = accepted;
  }

  /**
   * Indexes {@code specs} under {@code dialect}. UNet modules are accepted under both their
   * underscored diffusers path and their underscored original path, whichever a tool wrote.
   *
   * @throws IllegalArgumentException when a module's component has no prefix in the dialect, or
   *     two modules share a spelling
   */
  static KohyaIndex build(Iterable<ModuleSpec> specs, Descriptor.KohyaDialect dialect) {
    ImmutableMap.Builder<ModuleKey, String> written = ImmutableMap.builder();
    Map<String, ModuleKey> accepted = new HashMap<>();
    for (ModuleSpec spec : specs) {
      ModuleKey key = spec.key();
      String prefix =
          dialect
              .prefix(key.component())
              .orElseThrow(
                  () ->
                      new IllegalArgumentException(
                          "kohya's " + dialect + " scripts have no prefix for module '" + key + "'"));
      String diffusersName = prefix + underscored(key.path());
      Optional<String> originalName = spec.originalPath().map(path -> prefix + underscored(path));
      written.put(key, dialect.writesOriginalPaths() ? originalName.orElse(diffusersName) : diffusersName);
      accept(accepted, diffusersName, key);
      dialect.alsoRead(key.component()).ifPresent(other -> accept(accepted, other + underscored(key.path()), key));
      originalName.ifPresent(name -> accept(accepted, name, key));
    }
    return new KohyaIndex(written.buildOrThrow(), ImmutableMap.copyOf(accepted));
  }

  private static void accept(Map<String, ModuleKey> accepted, String name, ModuleKey key) {
    ModuleKey previous = accepted.putIfAbsent(name, key);
    if (previous != null && !previous.equals(key)) {
      throw new IllegalArgumentException(
          "kohya name '" + name + "' would name both '" + previous + "' and '" + key + "'");
    }
  }

  private static String underscored(String path) {
    return path.replace('.', '_');
  }

  /** The name kohya's scripts write for {@code key}, if it is indexed. */
  Optional<String> written(ModuleKey key) {
    return Optional.ofNullable(written.get(key));
  }

  /** The module an accepted spelling names. */
  Optional<ModuleKey> resolve(String name) {
    return Optional.ofNullable(accepted.get(name));
  }
}

package dev.loramerge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSortedMap;
import com.google.errorprone.annotations.CanIgnoreReturnValue;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;

/**
 * A LoRA adapter: its modules keyed by canonical {@link ModuleKey}, and the metadata its file
 * carried (kohya's {@code ss_*} keys among them), kept so that a conversion loses nothing.
 *
 * <p>Instances are immutable and thread-safe; factors may be memory-mapped views of the file the
 * adapter was read from, read only when a computation needs them.
 *
 * <pre>{@code
 * LoraAdapter style = LoraFiles.read(Path.of("style.safetensors"));
 * for (LoraModule module : style.modules().values()) {
 *   System.out.println(module.key() + " rank " + module.rank());
 * }
 * }</pre>
 */
public final class LoraAdapter {
  private final String name;
  private final ImmutableSortedMap<ModuleKey, LoraModule> modules;
  private final ImmutableMap<String, String> metadata;

  private LoraAdapter(Builder builder) {
    this.name = builder.name;
    this.modules = ImmutableSortedMap.copyOf(builder.modules);
    this.metadata = ImmutableMap.copyOf(builder.metadata);
  }

  /** A builder for an adapter with no modules. */
  public static Builder builder() {
    return new Builder();
  }

  /** A builder holding this adapter's name, modules and metadata. */
  public Builder toBuilder() {
    Builder builder = new Builder().name(name);
    builder.modules.putAll(modules);
    builder.metadata.putAll(metadata);
    return builder;
  }

  /** A short name for messages and recipes, usually the file name without extension. */
  public String name() {
    return name;
  }

  /** The modules, in key order. */
  public ImmutableSortedMap<ModuleKey, LoraModule> modules() {
    return modules;
  }

  /** The module for {@code key}, if the adapter has one. */
  public Optional<LoraModule> module(ModuleKey key) {
    return Optional.ofNullable(modules.get(key));
  }

  /** Metadata from the source file, in its order. */
  public ImmutableMap<String, String> metadata() {
    return metadata;
  }

  /** Number of modules. */
  public int size() {
    return modules.size();
  }

  /** Equal when name, modules and metadata are equal. */
  @Override
  public boolean equals(Object other) {
    if (!(other instanceof LoraAdapter)) {
      return false;
    }
    LoraAdapter that = (LoraAdapter) other;
    return name.equals(that.name) && modules.equals(that.modules) && metadata.equals(that.metadata);
  }

  @Override
  public int hashCode() {
    return java.util.Objects.hash(name, modules, metadata);
  }

  @Override
  public String toString() {
    return String.format(Locale.ROOT, "LoraAdapter{name=%s, modules=%d}", name, modules.size());
  }

  /** Collects modules and metadata; not thread-safe. */
  public static final class Builder {
    private String name = "adapter";
    private final Map<ModuleKey, LoraModule> modules = new TreeMap<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    private Builder() {}

    /** Sets the adapter's name. */
    @CanIgnoreReturnValue
    public Builder name(String name) {
      this.name = checkNotNull(name, "name");
      return this;
    }

    /**
     * Adds a module.
     *
     * @throws LoraMergeException when a module with the same key was already added
     */
    @CanIgnoreReturnValue
    public Builder add(LoraModule module) {
      checkNotNull(module, "module");
      LoraModule previous = modules.putIfAbsent(module.key(), module);
      if (previous != null) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "adapter '%s' has module '%s' twice", name, module.key()));
      }
      return this;
    }

    /** Adds or replaces a module. */
    @CanIgnoreReturnValue
    public Builder put(LoraModule module) {
      modules.put(module.key(), checkNotNull(module, "module"));
      return this;
    }

    /** Removes the module for {@code key} if present. */
    @CanIgnoreReturnValue
    public Builder remove(ModuleKey key) {
      modules.remove(key);
      return this;
    }

    /** Adds or replaces a metadata entry. */
    @CanIgnoreReturnValue
    public Builder putMetadata(String key, String value) {
      checkArgument(!key.isEmpty(), "metadata key must not be empty");
      metadata.put(key, checkNotNull(value, "value"));
      return this;
    }

    /** Adds or replaces metadata entries, in the map's order. */
    @CanIgnoreReturnValue
    public Builder putAllMetadata(Map<String, String> entries) {
      entries.forEach(this::putMetadata);
      return this;
    }

    /** Removes every metadata entry. */
    @CanIgnoreReturnValue
    public Builder clearMetadata() {
      metadata.clear();
      return this;
    }

    /** The adapter. */
    public LoraAdapter build() {
      return new LoraAdapter(this);
    }
  }
}

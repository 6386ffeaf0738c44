package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableSet;
import com.google.errorprone.annotations.CanIgnoreReturnValue;
import dev.loramerge.arch.Architecture;
import java.util.Optional;

/**
 * How {@link LoraFiles} reads an adapter: which architecture or base weights resolve kohya's
 * underscored module names, and whether tensors it cannot read are an error.
 *
 * <p>Underscored names are resolved against, in order: the given architecture; the given base
 * weight keys; every known architecture whose modules and shapes the file fits; the grammar of
 * diffusers module names. A name none of these resolves is an error that names it.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class LoraReadOptions {
  private static final LoraReadOptions DEFAULTS = builder().build();

  private final Optional<Architecture> architecture;
  private final ImmutableSet<String> baseKeys;
  private final boolean skipUnsupported;

  private LoraReadOptions(Builder builder) {
    this.architecture = builder.architecture;
    this.baseKeys = builder.baseKeys;
    this.skipUnsupported = builder.skipUnsupported;
  }

  /** Resolve by detection, fail on unsupported tensors. */
  public static LoraReadOptions defaults() {
    return DEFAULTS;
  }

  /** A builder with the defaults. */
  public static Builder builder() {
    return new Builder();
  }

  /** A builder holding these options. */
  public Builder toBuilder() {
    Builder builder = new Builder();
    builder.architecture = architecture;
    builder.baseKeys = baseKeys;
    builder.skipUnsupported = skipUnsupported;
    return builder;
  }

  /**
   * The architecture that resolves names first, if one was given; the adapter is also taken for
   * it wherever its modules fit it, before its metadata and names ({@link LoraFiles.Detected}).
   */
  public Optional<Architecture> architecture() {
    return architecture;
  }

  /** Tensor names of the base weights the adapter is meant for (empty when not given). */
  public ImmutableSet<String> baseKeys() {
    return baseKeys;
  }

  /** Whether tensors of no adapter kind this library reads (OFT, unknown keys) are dropped with a warning instead of failing the read. */
  public boolean skipUnsupported() {
    return skipUnsupported;
  }

  @Override
  public String toString() {
    return "LoraReadOptions{architecture="
        + architecture.map(Architecture::id).orElse("detect")
        + ", baseKeys="
        + baseKeys.size()
        + ", skipUnsupported="
        + skipUnsupported
        + "}";
  }

  /** Builds {@link LoraReadOptions}; not thread-safe. */
  public static final class Builder {
    private Optional<Architecture> architecture = Optional.empty();
    private ImmutableSet<String> baseKeys = ImmutableSet.of();
    private boolean skipUnsupported;

    private Builder() {}

    /** Resolves names against {@code architecture} first. */
    @CanIgnoreReturnValue
    public Builder architecture(Architecture architecture) {
      this.architecture = Optional.of(checkNotNull(architecture, "architecture"));
      return this;
    }

    /**
     * Resolves names against these base weight tensor names (e.g. a UNet file's keys); a key that
     * is no architecture's module gives way to that of an architecture whose modules and shapes
     * fit every name.
     */
    @CanIgnoreReturnValue
    public Builder baseKeys(Iterable<String> baseKeys) {
      this.baseKeys = ImmutableSet.copyOf(baseKeys);
      return this;
    }

    /** Drops unreadable tensors with a warning instead of failing. */
    @CanIgnoreReturnValue
    public Builder skipUnsupported(boolean skipUnsupported) {
      this.skipUnsupported = skipUnsupported;
      return this;
    }

    /** The options. */
    public LoraReadOptions build() {
      return new LoraReadOptions(this);
    }
  }
}

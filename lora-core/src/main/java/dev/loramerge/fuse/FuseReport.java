package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableSortedMap;
import dev.loramerge.ModuleKey;

/**
 * Which LoRA modules a fuse matched to which base weights, which it could not place, and which
 * weights it widened.
 *
 * @param matched each fused module and the name of the weight it changed
 * @param unmatched modules with no weight in the target (fused only when the caller allows it)
 * @param widened the weights the fuse gave more input features (a Flux.1 control LoRA's {@code
 *     img_in}), in the order of {@code matched}
 */
public record FuseReport(
    ImmutableSortedMap<ModuleKey, String> matched, ImmutableList<ModuleKey> unmatched, ImmutableList<Widened> widened) {
  /** Validates. */
  public FuseReport {
    checkNotNull(matched, "matched");
    checkNotNull(unmatched, "unmatched");
    checkNotNull(widened, "widened");
  }

  /** A report of a fuse that widened no weight. */
  public FuseReport(ImmutableSortedMap<ModuleKey, String> matched, ImmutableList<ModuleKey> unmatched) {
    this(matched, unmatched, ImmutableList.of());
  }

  /**
   * A weight a fuse widened from {@code fromFeatures} to {@code toFeatures} input features: the
   * new columns are zero in the base, so they hold the update alone (see {@link
   * dev.loramerge.arch.Architecture#widensInput}).
   *
   * @param module the module whose update widened it
   * @param weight the weight's name in the target
   * @param fromFeatures the base weight's input features
   * @param toFeatures the fused weight's input features, more than {@code fromFeatures}
   */
  public record Widened(ModuleKey module, String weight, long fromFeatures, long toFeatures) {
    /** Validates. */
    public Widened {
      checkNotNull(module, "module");
      checkNotNull(weight, "weight");
      checkArgument(0 < fromFeatures && fromFeatures < toFeatures, "a widened weight grows, got %s to %s", fromFeatures, toFeatures);
    }
  }

  /** One line: how many modules matched, and how many did not. */
  @Override
  public String toString() {
    return matched.size() + " modules fused" + (unmatched.isEmpty() ? "" : ", " + unmatched.size() + " not in the base");
  }
}

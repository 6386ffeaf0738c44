package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableSortedMap;
import dev.loramerge.ModuleKey;

/**
 * Which LoRA modules a fuse matched to which base weights, and which it could not place.
 *
 * @param matched each fused module and the name of the weight it changed
 * @param unmatched modules with no weight in the target (fused only when the caller allows it)
 */
public record FuseReport(ImmutableSortedMap<ModuleKey, String> matched, ImmutableList<ModuleKey> unmatched) {
  /** Validates. */
  public FuseReport {
    checkNotNull(matched, "matched");
    checkNotNull(unmatched, "unmatched");
  }

  /** One line: how many modules matched, and how many did not. */
  @Override
  public String toString() {
    return matched.size() + " modules fused" + (unmatched.isEmpty() ? "" : ", " + unmatched.size() + " not in the base");
  }
}

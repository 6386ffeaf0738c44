package dev.loramerge;

import com.google.common.collect.ImmutableSet;
import java.nio.ByteBuffer;

/**
 * What a fuse changes in a {@link WeightTarget}: the names of the weights it rewrites and, for
 * each, the rewritten values. {@link LoraMerger} creates updates; targets apply them.
 *
 * <p>{@link #apply} is deterministic: the same weight gives the same bytes every time, which is
 * what lets in-memory targets replay fuses to restore weights bit for bit.
 */
public interface WeightUpdate {
  /** The names of the weights this update rewrites. */
  ImmutableSet<String> names();

  /**
   * The new value of weight {@code name}: {@code weight} holds its current bytes (little-endian,
   * of {@code info}'s dtype and shape); the result is the weight plus the update, rounded once
   * from the exact sum to {@code dtype} (F64, F32, F16 or BF16), as little-endian bytes. When
   * {@code dtype} is as wide as the weight's own type the result may be written over {@code
   * weight} and returned in its place; if this throws, {@code weight}'s contents are unspecified.
   *
   * @throws IllegalArgumentException if this update does not rewrite {@code name}
   * @throws LoraMergeException if a result is not finite or beyond the dtype's range
   */
  ByteBuffer apply(String name, ByteBuffer weight, WeightInfo info, DType dtype);

  /**
   * How the update was made, as the recipe JSON that {@link LoraMerger#RECIPE_KEY} holds in a
   * merged adapter, with {@code operation} ({@code fuse} or {@code unfuse}) and {@code scale}.
   */
  String recipe();

  /** Tells the update's listener that {@code done} of {@code total} bytes of weights are written. */
  void progress(long done, long total);
}

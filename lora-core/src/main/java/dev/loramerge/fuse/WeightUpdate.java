package dev.loramerge.fuse;

import com.google.common.collect.ImmutableSet;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorSpec;
import dev.loramerge.merge.LoraMerger;
import java.nio.ByteBuffer;
import java.util.concurrent.ForkJoinPool;

/**
 * What a fuse changes in a {@link WeightTarget}: the names of the weights it rewrites and, for
 * each, the rewritten values. {@link LoraFuser} creates updates; targets apply them.
 *
 * <p>{@link #apply} is deterministic: the same weight gives the same bytes every time, which is
 * what lets in-memory targets replay fuses to restore weights bit for bit.
 */
public interface WeightUpdate {
  /** The names of the weights this update rewrites. */
  ImmutableSet<String> names();

  /**
   * The shape the update gives the weight {@code spec} names: its own, except for a weight the
   * update widens (a Flux.1 control LoRA's {@code img_in}, whose input features grow from 64 to
   * 128 with zero columns, as diffusers widens it; see {@link
   * dev.loramerge.arch.Architecture#widensInput}). A target that cannot change a weight's shape
   * refuses such an update before writing anything. A new array on each call.
   */
  default long[] outputShape(TensorSpec spec) {
    return spec.shape();
  }

  /**
   * Writes the weight {@code spec} names plus the update into {@code into}. {@code weight} holds
   * the weight's current bytes (little-endian, of {@code spec}'s dtype and shape); {@code into}
   * receives, from its position, the sum rounded once from its exact value to {@code dtype} (F64,
   * F32, F16 or BF16) as little-endian bytes, {@link #outputShape} elements of them. {@code into}
   * may be {@code weight} itself when both types are equally wide and the shape stays. If this
   * throws, {@code into}'s contents are unspecified.
   *
   * @throws IllegalArgumentException if this update does not rewrite the weight {@code spec} names
   * @throws LoraMergeException if a result is not finite or beyond the dtype's range
   */
  void apply(TensorSpec spec, ByteBuffer weight, ByteBuffer into, DType dtype);

  /**
   * How errors about the weight {@code name} name it: by default the weight alone, or the module
   * whose update it receives, as this update's own errors do.
   */
  default String describe(String name) {
    return "weight '" + name + "'";
  }

  /**
   * How the update was made, as the recipe JSON that {@link LoraMerger#RECIPE_KEY} holds in a
   * merged adapter, with {@code operation} ({@code fuse} or {@code unfuse}) and {@code scale}.
   */
  String recipe();

  /**
   * The threads this update's work runs on, owned by whoever made the update and shut down when
   * its fuse returns: a target that rewrites several weights at once runs them here (a parallel
   * stream inside a task of this pool stays in it), and {@link #apply} runs its own parallel
   * kernels here whichever thread calls it, until the pool is shut down.
   */
  ForkJoinPool workers();

  /** Tells the update's listener that {@code done} of {@code total} bytes of weights are written. */
  void progress(long done, long total);
}

package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;
import static com.google.common.base.Preconditions.checkState;

import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.util.Pair;
import com.google.common.collect.ImmutableMap;
import com.google.errorprone.annotations.CanIgnoreReturnValue;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorSpec;
import dev.loramerge.internal.fuse.FactorCache;
import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;

/**
 * Base weights that LoRA updates are fused into: NDArrays in memory ({@link #of(Map)}), a DJL
 * block's parameters ({@link #of(Block)}), or a safetensors file rewritten tensor by tensor
 * ({@code dev.loramerge.io.SafetensorsWeights}).
 *
 * <pre>{@code
 * WeightTarget unet = WeightTarget.of(weights);            // Map<String, NDArray>
 * FusedLora fused = LoraFuser.of(LoraMerger.builder().add(style, 0.7).build()).fuseInto(unet);
 * ...                                                       // render
 * fused.unfuse();                                           // every weight back, bit for bit
 * }</pre>
 */
public interface WeightTarget {
  /** Every weight's name, dtype and shape, keyed by its name, in the target's own order. */
  ImmutableMap<String, TensorSpec> weights();

  /**
   * Rewrites the weights {@code update} names, all or nothing: when it throws, the target is as
   * it was.
   *
   * @return what undoes exactly this rewrite, where the target can restore weights in place;
   *     empty for targets that write a new file
   * @throws IOException if reading or writing the target fails
   * @throws LoraMergeException if a fused value is not finite or beyond its dtype's range
   */
  Optional<Restorer> apply(WeightUpdate update) throws IOException;

  /**
   * Frees what the target keeps between fuses only to make the next one faster. An in-memory
   * target ({@link #of(Map)}) keeps, for each weight it has restored, the memory of the copy it
   * restored it from, and copies into that memory when a fuse touches the weight again; that
   * memory, in its {@link SpareCopies}, is also freed with the weights' manager. One built with
   * {@link Builder#keepFactorsOnDevice} keeps adapters' factors on the weights' device. Fuses
   * still active keep what they need to be undone. Targets that write files keep nothing.
   */
  default void trim() {}

  /** Undoes one {@link #apply}. */
  @FunctionalInterface
  interface Restorer {
    /**
     * Restores the weights the apply changed to what they would be had it never happened: bit for
     * bit the originals when no other update touches them, else the originals with the other
     * updates re-applied in their order.
     */
    void restore();
  }

  /**
   * The NDArrays of {@code weights}, updated in place on their own devices; {@link #builder()}
   * with its defaults. Fuses into the returned target can be undone in any order, bit for bit.
   *
   * <p>The target keeps a copy of each weight a fuse touches, from the first fuse that touches
   * it: on the CPU in the weight's manager, on a GPU where {@link Builder#originals} says (on the
   * device by default). After the last fuse into a CPU weight is undone, the copy's memory stays
   * for the next fuse to reuse (fresh memory costs the kernel a page fault per 4 KiB) until
   * {@link #trim()} or until the weights' manager is closed. The target keeps that memory in
   * {@link SpareCopies} of its own; to share it between targets made over the same arrays, use
   * {@link #of(Map, SpareCopies)}. On a GPU, copies are freed as their weights are restored
   * (libtorch's caching allocator keeps the memory for the next fuse).
   *
   * <p>Weights on a GPU are fused there: the update is computed from its float64 factors with
   * libtorch's kernels on the device, rounded once like on the CPU (the same bytes), and written
   * in place; only the factors travel to the device and a few scalars back. Weights on the CPU
   * are fused in Java, straight into their memory where it is laid out contiguously.
   *
   * <p>The target is thread-safe, and serialises its fuses and unfuses: each holds the target's
   * lock for its whole write, so they never interleave, and from any number of threads they leave
   * the weights as some order of them, one at a time, would (bit for bit the originals once all
   * are undone). A fuse or unfuse writes only the weights its modules touch, and into them only
   * their new values, but in place and while it runs: a render that reads the weights meanwhile
   * sees some fused and some not. Keep renders and fuses of the same weights apart, for example
   * with a {@link java.util.concurrent.locks.ReadWriteLock} whose read lock renders hold and whose
   * write lock fuses and unfuses hold.
   *
   * <p>An array's shape is fixed: a fuse that would widen a weight (a Flux.1 control LoRA's
   * {@code img_in}, see {@link WeightUpdate#outputShape}) is refused before anything is written.
   *
   * <p>Targets over the same arrays do not see each other's fuses: fusing through two of them at
   * once, or undoing a fuse through one while a fuse through the other touches the same weights,
   * leaves those weights wrong. Keep one target per set of weights while fuses are active.
   *
   * @throws IllegalArgumentException naming the arrays whose type cannot be fused into
   */
  static WeightTarget of(Map<String, NDArray> weights) {
    return builder().weights(weights).build();
  }

  /**
   * {@link #of(Map)}, keeping the copies' memory in {@code spares}: targets made over the same
   * arrays with the same spares find what the others left, and there is never more than one such
   * copy per weight however many targets are made.
   *
   * @throws IllegalArgumentException naming the arrays whose type cannot be fused into
   */
  static WeightTarget of(Map<String, NDArray> weights, SpareCopies spares) {
    return builder().weights(weights).spares(spares).build();
  }

  /** A builder of an in-memory target ({@link #of(Map)}), for the options {@code of} leaves at their defaults. */
  static Builder builder() {
    return new Builder();
  }

  /** Where the copies of GPU weights that make fuses undoable are kept. */
  enum Originals {
    /**
     * On the weight's device: one copy of each weight a fuse touches (for an SDXL fuse of the
     * attention weights in fp16, 4.4 GB), restored with device-to-device copies.
     */
    ON_DEVICE,
    /**
     * In host memory, for GPUs without room for the copies: they go to the host once, at the
     * first fuse of each weight, and come back when the weight is restored.
     */
    IN_HOST_MEMORY
  }

  /** Options of an in-memory target; not thread-safe. */
  final class Builder {
    private ImmutableMap<String, NDArray> weights;
    private SpareCopies spares;
    private Originals originals = Originals.ON_DEVICE;
    private long factorBytesOnDevice;
    private boolean libtorchOnCpu;

    private Builder() {}

    /** The arrays to fuse into, by name (required). */
    @CanIgnoreReturnValue
    public Builder weights(Map<String, NDArray> weights) {
      this.weights = ImmutableMap.copyOf(checkNotNull(weights, "weights"));
      return this;
    }

    /**
     * The parameters of {@code block} to fuse into, named as {@link Block#getParameters()} names
     * them ({@link WeightTarget#of(Block)}); instead of {@link #weights}.
     *
     * @throws IllegalArgumentException if a parameter is not initialized
     */
    @CanIgnoreReturnValue
    public Builder parameters(Block block) {
      checkNotNull(block, "block");
      Map<String, NDArray> arrays = new LinkedHashMap<>();
      for (Pair<String, Parameter> parameter : block.getParameters()) {
        if (!parameter.getValue().isInitialized()) {
          throw new IllegalArgumentException("parameter '" + parameter.getKey() + "' is not initialized");
        }
        arrays.put(parameter.getKey(), parameter.getValue().getArray());
      }
      return weights(arrays);
    }

    /** Where the memory of restored CPU weights' copies is kept ({@link #of(Map, SpareCopies)}); default: the target's own. */
    @CanIgnoreReturnValue
    public Builder spares(SpareCopies spares) {
      this.spares = checkNotNull(spares, "spares");
      return this;
    }

    /** Where GPU weights' originals are kept (default {@link Originals#ON_DEVICE}); CPU weights keep theirs in host memory either way. */
    @CanIgnoreReturnValue
    public Builder originals(Originals originals) {
      this.originals = checkNotNull(originals, "originals");
      return this;
    }

    /**
     * Keeps the stored factors of the adapters fused into GPU weights on the weights' device
     * between fuses, up to {@code maxBytes} (default 0: none), so that fusing the same adapter
     * again (its {@link dev.loramerge.LoraAdapter} instance, at any weight) copies only its
     * coefficients to the device: what PEFT and diffusers get by keeping LoRA modules on the GPU.
     * An adapter's factors take what its file takes (an SDXL rank-32 fp16 LoRA of the attention
     * weights, about 170 MB). The least recently fused adapters make room for others; an adapter
     * the garbage collector has found unreachable is dropped at the next fuse, and {@link WeightTarget#trim()}
     * frees them all. Applies to fuses whose update is the adapters' weighted sum as stored ({@code
     * cat}, plain LoRA modules), which are those a backend swaps per request.
     *
     * @throws IllegalArgumentException if {@code maxBytes} is negative
     */
    @CanIgnoreReturnValue
    public Builder keepFactorsOnDevice(long maxBytes) {
      checkArgument(maxBytes >= 0, "maxBytes is %s; expected 0 or more", maxBytes);
      this.factorBytesOnDevice = maxBytes;
      return this;
    }

    /** Fuses CPU arrays the way GPU arrays are fused, with libtorch: the device path, testable without a GPU. */
    @CanIgnoreReturnValue
    Builder libtorchOnCpu() {
      this.libtorchOnCpu = true;
      return this;
    }

    /**
     * The target.
     *
     * @throws IllegalStateException if no weights were given
     * @throws IllegalArgumentException naming the arrays whose type cannot be fused into
     */
    public WeightTarget build() {
      checkState(weights != null, "no weights: call weights(map) first");
      return new ArrayTarget(
          weights, spares != null ? spares : SpareCopies.create(), originals, FactorCache.withBudget(factorBytesOnDevice), libtorchOnCpu);
    }
  }

  /**
   * The parameters of {@code block}, named as {@link Block#getParameters()} names them (for a
   * TorchScript UNet, {@code down_blocks.0.attentions.0.proj_in.weight} and so on), updated in
   * place on the block's device, with copies kept and threads served as {@link #of(Map)} does.
   *
   * @throws IllegalArgumentException if a parameter is not initialized
   */
  static WeightTarget of(Block block) {
    return builder().parameters(block).build();
  }

  /** The parameters of {@code model}'s block; see {@link #of(Block)}. */
  static WeightTarget of(Model model) {
    return of(checkNotNull(model, "model").getBlock());
  }
}

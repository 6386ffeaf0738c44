package dev.loramerge.merge;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.internal.linalg.LazyManager;
import dev.loramerge.merge.spi.Offer.Precision;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * A merger's updates one module at a time, in float64, as a fuse adds them to base weights (see
 * {@link LoraMerger#updates()}). Native buffers are reused from one module to the next, so make
 * one per fuse. Thread-safe.
 */
public final class ModuleUpdates {
  private final ModuleMerger merger;
  private final MergeAlgorithm algorithm;
  private final Encoding encoding;
  private final DenseBuffers buffers = new DenseBuffers();
  private final Device device;

  ModuleUpdates(ModuleMerger merger, MergeAlgorithm algorithm, Encoding encoding, Device device) {
    this.device = device;
    this.merger = merger;
    this.algorithm = algorithm;
    this.encoding = encoding;
  }

  /**
   * The merged update of module {@code key}, scale 1, pruned as the merger prunes.
   *
   * <p>A method that is {@linkplain MergeAlgorithm.Requirements#exactInFloat64 exact in float64}
   * is offered float64 and its update is not rounded; others are offered float32, and their
   * update is taken as they return it, rounded to float32, so that fusing the merged adapter and
   * fusing directly give the same weights. Methods that work on Java arrays, the exact weighted
   * sum among them, make no native array: libtorch would make a handful of small arrays per
   * module, each of which wakes libtorch's OpenMP worker, which then spins for milliseconds on a
   * core the fuse needs.
   *
   * @throws IllegalArgumentException if no input has the module with a weight other than 0
   * @throws dev.loramerge.LoraMergeException if the inputs' modules do not fit together
   */
  public Float64Factors factors(ModuleKey key) {
    Precision precision = algorithm.requirements().exactInFloat64() ? Precision.FLOAT64 : Precision.FLOAT32;
    try (LazyManager manager = new LazyManager(() -> NDManager.newBaseManager(device))) {
      Merged merged = merger.merge(manager, buffers, key, precision, Optional.empty())
          .orElseThrow(() -> new IllegalArgumentException("no input has module '" + key + "'"));
      return encoding.toFloat64(merged, precision);
    }
  }

  /**
   * One input's share of a plain weighted sum: its factors as stored, B (out×r) and A (r×in·k·k,
   * a Tucker LoCon's computed from its core), its coefficient wᵢ·sᵢ, and the module they are
   * the factors of (immutable: its identity stands for their values, which a Tucker LoCon's A,
   * computed anew each time, cannot).
   */
  public record Term(TensorData up, TensorData down, int rank, double coefficient, LoraModule module) {}

  /**
   * Module {@code key}'s update as the inputs store it, when {@link #factors} is their exact
   * weighted sum: the cat, nothing re-ranked or pruned, every input's module a plain LoRA. {@link
   * #factors} is then, exactly, each term's B widened to float64 and times its coefficient (one
   * rounding), side by side, and the A's widened and stacked, so that a device can form it from
   * the stored factors, a quarter of its size for fp16 adapters. Empty otherwise.
   */
  public Optional<List<Term>> terms(ModuleKey key) {
    List<MergeInput> present = present(key);
    if (algorithm != MergeAlgorithm.cat() || encoding.prune().isPresent() || present.isEmpty()) {
      return Optional.empty();
    }
    List<Term> terms = new ArrayList<>(present.size());
    int rankSum = 0;
    for (MergeInput input : present) {
      LoraModule module = input.adapter().modules().get(key);
      if (!module.isPlainLora()) {
        return Optional.empty();
      }
      terms.add(new Term(module.up(), module.down(), module.rank(), input.weight(key) * module.scale(), module));
      rankSum += module.rank();
    }
    Optional<Integer> explicit = merger.policy().explicitRank(present.get(0).adapter().modules().get(key).kind());
    return explicit.isPresent() && rankSum > explicit.get() ? Optional.empty() : Optional.of(List.copyOf(terms));
  }

  /**
   * Whether module {@code key}'s update is materialised rather than merged in factor space: some
   * input's module is of a kind other than plain LoRA, has a DoRA magnitude or a bias difference
   * (see {@link #fusedF64}).
   */
  public boolean materialised(ModuleKey key) {
    return present(key).stream().anyMatch(input -> !input.adapter().modules().get(key).isPlainLora());
  }

  /**
   * Module {@code key}'s fused weight in float64, for a materialised update: {@code W + Σ
   * factor·wᵢ·ΔWᵢ}, or a replacement's tensor (the inputs' one replacement, unscaled; {@code W}
   * when factor·w is 0), where a module with a DoRA magnitude contributes {@code DoRAᵢ(W) − W} with
   * its weight inside the norm (PEFT's way: each adapter's DoRA is computed on the base weight,
   * and the adapters' contributions add); one DoRA module alone gives {@code DoRA(W)} as it is.
   * {@code weight} is the current weight, row-major, and is not changed.
   *
   * <p>With a method on full updates ({@link MergeAlgorithm.Requirements#fullUpdates}) or {@code
   * svd} it is {@code W + factor·B'·A'}, B'·A' the method's merge of the materialised updates,
   * re-ranked and pruned as a merge does.
   *
   * @throws LoraMergeException when the merger would do more than the exact weighted sum (a method
   *     on the factors, or cat with an explicit rank or pruning), which has no meaning for these
   *     kinds without re-ranking; when a method on full updates meets a DoRA magnitude or a bias
   *     difference; or when a DoRA module is subtracted ({@code factor} &lt; 0): the inverse of
   *     DoRA is not W − ΔW
   */
  public double[] fusedF64(ModuleKey key, double[] weight, double factor) {
    return fusedF64(key, weight, factor, DoraMagnitude.Weighting.INSIDE_NORM);
  }

  /**
   * Module {@code key}'s fused weight in float64, as {@link #fusedF64(ModuleKey, double[],
   * double)}, with each DoRA module's weight {@code factor·wᵢ} applied as {@code weighting} says:
   * with {@link DoraMagnitude.Weighting#BLEND} a DoRA module contributes {@code factor·wᵢ·(DoRAᵢ(W)
   * − W)}, its DoRA taken at weight 1.
   */
  public double[] fusedF64(ModuleKey key, double[] weight, double factor, DoraMagnitude.Weighting weighting) {
    List<MergeInput> present = present(key);
    checkMaterialisable(key, present, factor);
    Optional<LoraModule> replacement = ModuleMerger.replacement(key, present);
    if (replacement.isPresent()) {
      return replacement.get().fusedF64(weight, factor * present.get(0).weight(key));
    }
    if (mergedByMethod()) {
      return fusedByMethod(key, weight, factor);
    }
    if (present.size() == 1 && present.get(0).adapter().modules().get(key).magnitude().isEmpty()) {
      // One additive update: the sum goes into the update's own array, the largest allocation
      // of a fuse, rather than into one more of its size.
      MergeInput input = present.get(0);
      double[] delta = checkedDelta(key, input, input.adapter().modules().get(key), weight.length);
      double w = factor * input.weight(key);
      for (int i = 0; i < delta.length; i++) {
        delta[i] = weight[i] + w * delta[i];
      }
      return delta;
    }
    double[] sum = new double[weight.length];
    for (MergeInput input : present) {
      LoraModule module = input.adapter().modules().get(key);
      double w = factor * input.weight(key);
      if (module.magnitude().isPresent()) {
        double[] fused = module.fusedF64(weight, w, weighting);
        if (present.size() == 1) {
          return fused;
        }
        for (int i = 0; i < sum.length; i++) {
          sum[i] += fused[i] - weight[i];
        }
      } else {
        double[] delta = checkedDelta(key, input, module, weight.length);
        for (int i = 0; i < sum.length; i++) {
          sum[i] += w * delta[i];
        }
      }
    }
    double[] result = new double[weight.length];
    for (int i = 0; i < result.length; i++) {
      result[i] = weight[i] + sum[i];
    }
    return result;
  }

  /**
   * Whether a method other than the plain exact sum takes materialised updates: one on full updates
   * ({@code ties_svd}), or the exact sum re-ranked ({@code svd}).
   */
  private boolean mergedByMethod() {
    MergeAlgorithm.Requirements requirements = algorithm.requirements();
    return algorithm != MergeAlgorithm.cat() && (requirements.fullUpdates() || requirements.exactInFloat64());
  }

  /**
   * {@code W + factor·B'·A'} for a method on full updates or {@code svd}, whose merge materialises
   * the module's updates itself: B'·A' its factors as {@link #factors} gives them (rounded to
   * float32 as a merge writes them), so that fusing directly and fusing the merged adapter add the
   * same update.
   */
  private double[] fusedByMethod(ModuleKey key, double[] weight, double factor) {
    Float64Factors merged = factors(key);
    int rank = merged.rank();
    int columns = merged.down().length / rank;
    if (Math.multiplyExact(merged.up().length / rank, columns) != weight.length) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s' updates %d×%d values, but its weight has %d", key, merged.up().length / rank,
              columns, weight.length));
    }
    double[] result = weight.clone();
    double[] up = merged.up();
    double[] down = merged.down();
    for (int row = 0; row < up.length / rank; row++) {
      for (int k = 0; k < rank; k++) {
        double coefficient = factor * up[row * rank + k];
        for (int column = 0; column < columns; column++) {
          result[row * columns + column] += coefficient * down[k * columns + column];
        }
      }
    }
    return result;
  }

  /** Whether some input's module {@code key} has a bias difference. */
  public boolean hasBiasDiff(ModuleKey key) {
    return present(key).stream().anyMatch(input -> input.adapter().modules().get(key).biasDiff().isPresent());
  }

  /** The bias of module {@code key} in float64: {@code b + Σ factor·wᵢ·diff_bᵢ}. */
  public double[] fusedBiasF64(ModuleKey key, double[] bias, double factor) {
    List<MergeInput> present = present(key);
    checkMaterialisable(key, present, factor);
    double[] sum = new double[bias.length];
    for (MergeInput input : present) {
      var diff = input.adapter().modules().get(key).biasDiff();
      if (diff.isEmpty()) {
        continue;
      }
      double[] values = diff.get().toDoubleArray();
      if (values.length != bias.length) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' of adapter '%s' has a bias difference of %d values for a bias of %d", key,
                input.adapter().name(), values.length, bias.length));
      }
      double w = factor * input.weight(key);
      for (int i = 0; i < sum.length; i++) {
        sum[i] += w * values[i];
      }
    }
    double[] result = new double[bias.length];
    for (int i = 0; i < result.length; i++) {
      result[i] = bias[i] + sum[i];
    }
    return result;
  }

  private static double[] checkedDelta(ModuleKey key, MergeInput input, LoraModule module, int length) {
    if (TensorData.numel(module.weightShape()) != length) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s' of adapter '%s' updates %s, which is not %d values", key, input.adapter().name(),
              Arrays.toString(module.weightShape()), length));
    }
    return module.deltaF64();
  }

  private List<MergeInput> present(ModuleKey key) {
    return merger.inputs().stream()
        .filter(input -> input.weight(key) != 0 && input.adapter().modules().containsKey(key))
        .toList();
  }

  /**
   * Checks, before a fuse writes anything, that module {@code key}'s materialised update can be
   * fused at {@code factor}.
   *
   * @throws LoraMergeException as {@link #fusedF64} does
   */
  public void checkMaterialisable(ModuleKey key, double factor) {
    checkMaterialisable(key, present(key), factor);
  }

  private void checkMaterialisable(ModuleKey key, List<MergeInput> present, double factor) {
    Optional<LoraModule> replacement = ModuleMerger.replacement(key, present);
    if (replacement.isPresent()) {
      if (factor < 0) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' is a replacement, which cannot be subtracted (its tensor took the base weight's"
                    + " place); restore the original weights instead", key));
      }
      // No method, rank or pruning acts on a replacement: it is fused as it is.
      return;
    }
    if (factor < 0) {
      for (MergeInput input : present) {
        LoraModule module = input.adapter().modules().get(key);
        if (module.magnitude().isPresent()) {
          throw new LoraMergeException(
              String.format(
                  Locale.ROOT,
                  "module '%s' of adapter '%s' is a %s, which cannot be subtracted (DoRA renormalises W + ΔW);"
                      + " restore the original weights instead", key, input.adapter().name(), module.kindName()));
        }
      }
    }
    LoraModule module = present.stream().map(input -> input.adapter().modules().get(key))
        .filter(candidate -> !candidate.isPlainLora()).findFirst().orElse(present.get(0).adapter().modules().get(key));
    if (mergedByMethod()) {
      // The method materialises the update itself and re-ranks it, with any rank or pruning.
      Optional<LoraModule> exactOnly = present.stream().map(input -> input.adapter().modules().get(key))
          .filter(candidate -> candidate.magnitude().isPresent() || candidate.biasDiff().isPresent()).findFirst();
      if (exactOnly.isPresent()) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' is a %s: a DoRA magnitude or a bias difference is fused only as the exact"
                    + " weighted sum (cat), not by method %s; fuse it without the method", key,
                exactOnly.get().kindName(), algorithm.name()));
      }
      return;
    }
    String what = null;
    if (algorithm != MergeAlgorithm.cat()) {
      what = "method " + algorithm.name()
          + algorithm.onFullUpdates().map(variant -> ", which works on LoRA factors (" + variant.name()
              + " is the same method on the full updates and fuses it)").orElse("");
    } else if (merger.policy().explicitRank(module.kind()).isPresent()) {
      what = "an explicit rank";
    } else if (encoding.prune().isPresent()) {
      what = "pruning";
    }
    if (what != null) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' is a %s: its update is fused as the exact weighted sum of the full updates, but the merger"
                  + " asks for %s; fuse it without, or merge it to a LoRA first", key, module.kindName(), what));
    }
  }

  /**
   * The module of {@code key} of the first input that has it with a weight other than 0 and is not
   * a plain LoRA (see {@link #materialised}), if any.
   */
  public java.util.Optional<LoraModule> firstMaterialised(ModuleKey key) {
    return present(key).stream().map(input -> input.adapter().modules().get(key)).filter(module -> !module.isPlainLora()).findFirst();
  }

  /** The module of {@code key} of the first input that has it with a weight other than 0. */
  public LoraModule firstModule(ModuleKey key) {
    return merger.firstPresent(key);
  }
}

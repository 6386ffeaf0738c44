package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSet;
import com.google.common.collect.ImmutableSortedMap;
import com.google.errorprone.annotations.CanIgnoreReturnValue;
import dev.loramerge.AdapterKind;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.internal.fuse.FuseScratch;
import dev.loramerge.internal.json.Recipes;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeInput;
import dev.loramerge.merge.ModuleUpdates;
import java.io.IOException;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.concurrent.ForkJoinPool;

/**
 * Fuses a merger's update into base weights: {@code W' = W + scale·ΔW} for every module, with ΔW
 * the exact weighted sum {@code Σ wᵢ·sᵢ·BᵢAᵢ} (with block weights) or the update of the merger's
 * algorithm.
 *
 * <pre>{@code
 * LoraMerger merger = LoraMerger.builder().add(style, 0.7).algorithm(Dare.of(0.3)).build();
 * FusedLora fused = LoraFuser.builder().merger(merger).scale(0.9).build().fuseInto(unet);
 * ...                                            // render
 * fused.unfuse();                                // every weight back, bit for bit
 * }</pre>
 *
 * <p>Each weight is computed in float64 and rounded once to its own dtype (F64, F32, F16, BF16,
 * F8_E4M3, F8_E5M2), so it is the exact value correctly rounded (for an fp16 base, PEFT and
 * diffusers round the factors and the delta first and land up to ~1e-3 away). A module of
 * another {@link dev.loramerge.AdapterKind} than LoRA, with a DoRA magnitude or a bias
 * difference, is fused from its materialised update as the exact weighted sum, or as a method on
 * full updates (or {@code svd}) merges it (see {@link ModuleUpdates#fusedF64}); its bias
 * difference goes into the bias beside the weight. A {@linkplain
 * dev.loramerge.AdapterKind#REPLACEMENT replacement} (a Flux.1 control LoRA's norm scale, found
 * as {@code <path>.weight} or BFL's {@code ….norm.query_norm.scale}) sets the weight to its tensor,
 * rounded once, at any weight but 0, and is never subtracted. A Flux.1 control LoRA's {@code
 * img_in}, which takes 128 input features where the base's weight has 64 ({@link
 * Architecture#widensInput}), widens that weight as diffusers does: {@code [W | 0] + scale·ΔW},
 * rounded once ({@link FuseReport#widened()}, and {@code widened_input_features} in the recipe);
 * a target that cannot change a shape (in memory) refuses it, and so does a subtraction.
 *
 * <p>A module's weight is looked up as {@code <path>.weight} (a diffusers UNet or text-encoder
 * file, or a DJL TorchScript block), {@code <component>.<path>.weight} (a whole pipeline), and in
 * the original single-file checkpoint's names ({@code model.diffusion_model.input_blocks…},
 * {@code cond_stage_model.transformer…}, {@code conditioner.embedders.0.transformer…}) for the
 * adapters' architecture. Nothing is changed when a module does not fit its weight, when a module
 * has no weight (unless {@link Builder#allowUnmatched(boolean)}), or when a fused value is not
 * finite or beyond its dtype's range.
 *
 * <p>Instances are thread-safe, and immutable but for the block buffers they keep between fuses.
 * Each fuse runs on a pool of {@link Builder#threads(int)} workers of its own, shut down when it
 * returns; the target decides how many weights it rewrites at a time.
 */
public final class LoraFuser {
  private final LoraMerger merger;
  private final double scale;
  private final boolean allowUnmatched;
  private final Optional<Architecture> architecture;
  private final int threads;
  private final DoraMagnitude.Weighting doraWeighting;
  /** The fp16/bf16 kernel's block buffers, kept from one fuse to the next. */
  private final FuseScratch scratch = new FuseScratch();

  private LoraFuser(Builder builder) {
    this.threads = builder.threads;
    this.merger = builder.merger;
    this.scale = builder.scale;
    this.allowUnmatched = builder.allowUnmatched;
    this.architecture = builder.architecture;
    this.doraWeighting = builder.doraWeighting;
  }

  /** A builder with no merger, scale 1, unmatched modules failing the fuse. */
  public static Builder builder() {
    return new Builder();
  }

  /** A fuser of {@code merger}'s update with scale 1, failing on unmatched modules. */
  public static LoraFuser of(LoraMerger merger) {
    return builder().merger(merger).build();
  }

  /** A builder holding this fuser's settings. */
  public Builder toBuilder() {
    Builder builder = new Builder();
    builder.merger = merger;
    builder.scale = scale;
    builder.allowUnmatched = allowUnmatched;
    builder.architecture = architecture;
    builder.threads = threads;
    builder.doraWeighting = doraWeighting;
    return builder;
  }

  /**
   * Adds {@code scale} times the merged update to the weights of {@code target}.
   *
   * @return the fuse's report, and for in-memory targets the handle that undoes it bit for bit
   * @throws LoraMergeException when modules do not fit the target or a result is out of range
   * @throws IOException when the target's file cannot be read or written
   */
  public FusedLora fuseInto(WeightTarget target) throws IOException {
    return fuse(target, scale, "fuse");
  }

  /**
   * Subtracts the merged update from {@code target}, {@code W' = W − scale·ΔW} rounded once,
   * which is how PEFT unmerges: in fp16 it need not give back the original bits. To restore them
   * exactly, use {@link FusedLora#unfuse()} in memory, or the original file for files.
   */
  public FusedLora unfuseFrom(WeightTarget target) throws IOException {
    return fuse(target, -scale, "unfuse");
  }

  private FusedLora fuse(WeightTarget target, double factor, String operation) throws IOException {
    checkNotNull(target, "target");
    ImmutableMap<String, TensorSpec> weights = target.weights();
    Optional<Architecture> arch = architecture.or(() -> Architecture.detect(merger.inputs().get(0).adapter()));
    SortedSet<ModuleKey> keys = new TreeSet<>();
    for (MergeInput input : merger.inputs()) {
      for (ModuleKey key : input.adapter().modules().keySet()) {
        if (input.weight(key) != 0) {
          keys.add(key);
        }
      }
    }
    ModuleUpdates updates = merger.updates();
    ImmutableSortedMap.Builder<ModuleKey, String> matched = ImmutableSortedMap.naturalOrder();
    ImmutableList.Builder<ModuleKey> unmatched = ImmutableList.builder();
    Map<String, ModuleKey> byWeight = new LinkedHashMap<>();
    Map<String, ModuleKey> biases = new LinkedHashMap<>();
    Map<String, FusedModule> fusedWeights = new LinkedHashMap<>();
    Map<String, FusedModule> fusedBiases = new LinkedHashMap<>();
    Set<String> transposedWeights = new LinkedHashSet<>();
    ImmutableList.Builder<FuseReport.Widened> widened = ImmutableList.builder();
    for (ModuleKey key : keys) {
      Optional<String> name = BaseWeightNames.resolve(key, arch, weights.keySet());
      Optional<FusedModule> fused =
          name.isPresent()
              ? Optional.empty()
              : arch.flatMap(a -> a.fusedModule(key)).or(() -> BaseWeightNames.openClipInProjection(key, arch));
      if (fused.isPresent()) {
        name = BaseWeightNames.fusedNames(fused.get()).stream().filter(weights::containsKey).findFirst();
      }
      boolean transposed = false;
      if (name.isEmpty() && fused.isEmpty()) {
        name = BaseWeightNames.transposedName(key, arch).filter(weights::containsKey);
        transposed = name.isPresent();
      }
      if (name.isEmpty()) {
        unmatched.add(key);
        continue;
      }
      if (fused.isPresent()) {
        Optional<LoraModule> other = merger.inputs().stream()
            .map(input -> input.adapter().modules().get(key))
            .filter(module -> module != null && (module.adapterKind() != AdapterKind.LORA || module.magnitude().isPresent()))
            .findFirst();
        if (other.isPresent()) {
          throw new LoraMergeException(
              String.format(
                  Locale.ROOT,
                  "module '%s' is a part of fused weight '%s' (%s) but is a %s; only LoRA parts (with or without a bias"
                      + " difference) can be fused into their rows of a fused weight",
                  key, fused.get().originalPath(), name.get(), other.get().kindName()));
        }
        checkFits(key, fused.get(), weights.get(name.get()));
        if (updates.materialised(key)) {
          updates.checkMaterialisable(key, factor);
        }
        fusedWeights.put(name.get(), fused.get());
        matched.put(key, name.get());
        if (updates.hasBiasDiff(key)) {
          // The fused weight has one bias, its parts' biases stacked by the same rows.
          fusedBiases.put(biasName(key, name.get(), weights), fused.get());
        }
        continue;
      }
      LoraModule first = updates.firstModule(key);
      if (transposed) {
        checkTransposedFits(key, first, weights.get(name.get()));
        transposedWeights.add(name.get());
      } else if (arch.isPresent() && arch.get().widensInput(key, first.weightShape())) {
        widening(key, first, weights.get(name.get()), arch.get(), factor).ifPresent(widened::add);
      } else {
        checkFits(key, first, weights.get(name.get()));
      }
      if (updates.materialised(key)) {
        updates.checkMaterialisable(key, factor);
      }
      ModuleKey previous = byWeight.put(name.get(), key);
      if (previous != null) {
        throw new LoraMergeException(
            String.format(Locale.ROOT, "modules '%s' and '%s' both resolve to weight '%s'", previous, key, name.get()));
      }
      matched.put(key, name.get());
      if (updates.hasBiasDiff(key)) {
        biases.put(biasName(key, name.get(), weights), key);
      }
    }
    for (String name : fusedWeights.keySet()) {
      if (byWeight.containsKey(name)) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' and the parts of fused weight '%s' both resolve to weight '%s'",
                byWeight.get(name), fusedWeights.get(name).originalPath(), name));
      }
    }
    FuseReport report = new FuseReport(matched.build(), unmatched.build(), widened.build());
    if (report.matched().isEmpty()) {
      ModuleKey example = keys.first();
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "none of the adapters' %d modules has a weight in the target (module '%s' was looked for as %s);"
                  + " is the base for another architecture?",
              keys.size(),
              example,
              lookedFor(example, arch)));
    }
    if (!report.unmatched().isEmpty() && !allowUnmatched) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "%d of %d modules have no weight in the target, e.g. '%s' (looked for %s);"
                  + " allowUnmatched(true) fuses the other %d",
              report.unmatched().size(),
              keys.size(),
              report.unmatched().get(0),
              lookedFor(report.unmatched().get(0), arch),
              report.matched().size()));
    }
    ForkJoinPool workers = new ForkJoinPool(threads);
    try {
      WeightUpdate update =
          new MergedWeightUpdate(
              updates, merger.listener(), ImmutableMap.copyOf(byWeight), ImmutableMap.copyOf(biases), factor,
              doraWeighting, recipe(operation, factor, report.widened()), workers, scratch)
              .withFused(ImmutableMap.copyOf(fusedWeights), ImmutableMap.copyOf(fusedBiases), report.matched().keySet())
              .withTransposed(ImmutableSet.copyOf(transposedWeights))
              .withWidened(report.widened());
      return new FusedLora(report, target.apply(update));
    } finally {
      workers.shutdown();
    }
  }

  private String recipe(String operation, double factor, ImmutableList<FuseReport.Widened> widened) {
    return Recipes.toJson(
        () -> {
          Map<String, Object> recipe = new LinkedHashMap<>();
          recipe.put("operation", operation);
          recipe.put("scale", Math.abs(factor));
          if (doraWeighting == DoraMagnitude.Weighting.BLEND) {
            // Only when asked for, so that the recipes of every other fuse keep their bytes.
            recipe.put("dora_weighting", "blend");
          }
          if (!widened.isEmpty()) {
            // Only when a weight changed shape, so that the recipes of every other fuse keep their bytes.
            Map<String, Object> shapes = new LinkedHashMap<>();
            widened.forEach(w -> shapes.put(w.weight(), List.of(w.fromFeatures(), w.toFeatures())));
            recipe.put("widened_input_features", shapes);
          }
          recipe.putAll(merger.recipe());
          return recipe;
        });
  }

  /** The bias beside weight {@code weightName} ({@code ….weight} → {@code ….bias}), which must exist. */
  private static String biasName(ModuleKey key, String weightName, ImmutableMap<String, TensorSpec> weights) {
    String bias = weightName.endsWith("weight") ? weightName.substring(0, weightName.length() - "weight".length()) + "bias" : null;
    if (bias == null || !weights.containsKey(bias)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s' has a bias difference, but the target has no bias beside weight '%s' (looked for '%s')",
              key, weightName, bias));
    }
    return bias;
  }

  private static ImmutableList<String> lookedFor(ModuleKey key, Optional<Architecture> arch) {
    ImmutableList.Builder<String> names = ImmutableList.<String>builder().addAll(BaseWeightNames.candidates(key, arch));
    arch.flatMap(a -> a.fusedModule(key))
        .or(() -> BaseWeightNames.openClipInProjection(key, arch))
        .ifPresent(fused -> names.addAll(BaseWeightNames.fusedNames(fused)));
    BaseWeightNames.transposedName(key, arch).ifPresent(names::add);
    return names.build();
  }

  /**
   * How module {@code key}, whose update has more input features than {@code arch}'s weight
   * ({@link Architecture#widensInput}), fits base weight {@code weight}: a weight of the
   * architecture's shape is widened, one already as wide is fused as it is (empty), anything else
   * is refused; a subtraction is refused either way, since it cannot narrow the weight back.
   */
  private static Optional<FuseReport.Widened> widening(
      ModuleKey key, LoraModule module, TensorSpec weight, Architecture arch, double factor) {
    long[] expected = module.weightShape();
    long[] found = weight.shape();
    long baseFeatures = arch.module(key).orElseThrow().inFeatures();
    if (factor < 0) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' updates %d input features where %s's weight has %d: a fuse widened base weight '%s' to"
                  + " them, and subtracting the update cannot narrow it back; restore the original base instead"
                  + " (SafetensorsWeights.restoring, lora unfuse --original)",
              key, expected[1], arch.displayName(), baseFeatures, weight.name()));
    }
    if (found.length == 2 && found[0] == expected[0] && found[1] == baseFeatures && weight.dtype().isFloatingPoint()) {
      return Optional.of(new FuseReport.Widened(key, weight.name(), baseFeatures, expected[1]));
    }
    checkFits(key, module, weight);
    return Optional.empty();
  }

  private static void checkTransposedFits(ModuleKey key, LoraModule module, TensorSpec weight) {
    long[] expected = {module.inFeatures(), module.outFeatures()};
    if (module.kind() != LoraModule.Kind.LINEAR || !Arrays.equals(weight.shape(), expected) || !weight.dtype().isFloatingPoint()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' updates a %s weight, held transposed as %s in base weight '%s', which is %s",
              key,
              Arrays.toString(module.weightShape()),
              Arrays.toString(expected),
              weight.name(),
              weight.dtype().safetensorsName() + Arrays.toString(weight.shape())));
    }
  }

  private static void checkFits(ModuleKey key, FusedModule fused, TensorSpec weight) {
    if (!Arrays.equals(weight.shape(), fused.weightShape()) || !weight.dtype().isFloatingPoint()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' is a part of fused weight '%s' of %s, but base weight '%s' is %s",
              key,
              fused.originalPath(),
              Arrays.toString(fused.weightShape()),
              weight.name(),
              weight.dtype().safetensorsName() + Arrays.toString(weight.shape())));
    }
  }

  private static void checkFits(ModuleKey key, LoraModule module, TensorSpec weight) {
    long[] expected = module.weightShape();
    long[] found = weight.shape();
    if (found.length == 0 || found[0] != expected[0] || weight.numel() != TensorData.numel(expected)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' updates a %s weight but base weight '%s' is %s; is the adapter for another"
                  + " architecture?",
              key,
              Arrays.toString(expected),
              weight.name(),
              weight.dtype().safetensorsName() + Arrays.toString(found)));
    }
    if (!weight.dtype().isFloatingPoint()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "base weight '%s' is %s; can fuse only into F64, F32, F16, BF16, F8_E4M3 or F8_E5M2",
              weight.name(),
              weight.dtype().safetensorsName() + Arrays.toString(found)));
    }
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT, "LoraFuser{merger=%s, scale=%s, allowUnmatched=%s, architecture=%s, doraWeighting=%s}",
        merger, scale, allowUnmatched, architecture.map(String::valueOf).orElse("detected"), doraWeighting);
  }

  /** Collects the merger and the fuse's options; not thread-safe. */
  public static final class Builder {
    private int threads = Runtime.getRuntime().availableProcessors();
    private LoraMerger merger;
    private double scale = 1;
    private boolean allowUnmatched;
    private Optional<Architecture> architecture = Optional.empty();
    private DoraMagnitude.Weighting doraWeighting = DoraMagnitude.Weighting.INSIDE_NORM;

    private Builder() {}

    /** The merger whose update is fused (required). */
    @CanIgnoreReturnValue
    public Builder merger(LoraMerger merger) {
      this.merger = checkNotNull(merger, "merger");
      return this;
    }

    /** The factor the merged update is multiplied by: diffusers' {@code lora_scale}; default 1. */
    @CanIgnoreReturnValue
    public Builder scale(double scale) {
      checkArgument(Double.isFinite(scale), "scale must be finite, got %s", scale);
      this.scale = scale;
      return this;
    }

    /**
     * Whether a fuse may skip modules that have no weight in the target (default false: it fails
     * naming them). {@link FuseReport#unmatched()} lists what was skipped.
     */
    @CanIgnoreReturnValue
    public Builder allowUnmatched(boolean allowUnmatched) {
      this.allowUnmatched = allowUnmatched;
      return this;
    }

    /**
     * The architecture whose original checkpoint names weights may be looked up by (default:
     * detected from the first adapter).
     */
    @CanIgnoreReturnValue
    public Builder architecture(Architecture architecture) {
      this.architecture = Optional.of(checkNotNull(architecture, "architecture"));
      return this;
    }

    /**
     * How the user weight w (an input's weight times the scale) applies to a DoRA module (default
     * {@link DoraMagnitude.Weighting#INSIDE_NORM}, PEFT's). {@link DoraMagnitude.Weighting#BLEND}
     * fuses {@code W + w·(DoRA(W) − W)}, as ComfyUI does, and is recorded in the output's recipe
     * ({@code "dora_weighting": "blend"}). Either is computed in float64 and rounded once.
     */
    @CanIgnoreReturnValue
    public Builder doraWeighting(DoraMagnitude.Weighting doraWeighting) {
      this.doraWeighting = checkNotNull(doraWeighting, "doraWeighting");
      return this;
    }

    /**
     * Worker threads (default: one per core): each fuse runs on a pool of its own, shut down when
     * it returns. Results do not depend on it.
     */
    @CanIgnoreReturnValue
    public Builder threads(int threads) {
      checkArgument(threads > 0, "threads must be positive, got %s", threads);
      this.threads = threads;
      return this;
    }

    /** The fuser. */
    public LoraFuser build() {
      checkArgument(merger != null, "a fuse needs a merger");
      return new LoraFuser(this);
    }

    /** Shortcut for {@code build().fuseInto(target)}. */
    public FusedLora fuseInto(WeightTarget target) throws IOException {
      return build().fuseInto(target);
    }

    /** Shortcut for {@code build().unfuseFrom(target)}. */
    public FusedLora unfuseFrom(WeightTarget target) throws IOException {
      return build().unfuseFrom(target);
    }
  }
}

package dev.loramerge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSet;
import com.google.common.collect.ImmutableSortedMap;
import com.google.errorprone.annotations.CanIgnoreReturnValue;
import dev.loramerge.internal.FactoredSvd;
import dev.loramerge.internal.Fusion;
import dev.loramerge.internal.LowRankProducts;
import dev.loramerge.internal.NdArrays;
import dev.loramerge.internal.RandomizedSvd;
import dev.loramerge.internal.Randoms;
import dev.loramerge.internal.Recipes;
import dev.loramerge.spi.ModuleInput;
import dev.loramerge.spi.ModuleMerge;
import dev.loramerge.spi.ModuleUpdate;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import java.util.function.ToIntFunction;
import java.util.stream.Collectors;

/**
 * Merges weighted LoRA adapters into one, module by module.
 *
 * <pre>{@code
 * LoraAdapter merged = LoraMerger.builder()
 *     .add(style, 0.7).add(subject, 0.5)
 *     .algorithm(Ties.of(0.5))
 *     .rank(32)
 *     .merge();
 * }</pre>
 *
 * <p>Without an algorithm the merge is the exact weighted sum ({@link MergeAlgorithm#cat()}).
 * A module that only some adapters have is merged from those; an adapter with weight 0 takes no
 * part. Re-ranking methods, and any result whose rank exceeds an explicit {@link
 * Builder#rank(int)}, are truncated by the exact factored SVD (the m×n update is never built).
 * The result's modules have α = rank (scale 1), as PEFT's merged adapters do.
 *
 * <p>Instances are immutable and thread-safe; {@link #merge()} may run concurrently. Each module
 * is merged in its own NDManager, closed before the next, so memory stays at about one module
 * per worker thread; results are identical whatever the thread count.
 */
public final class LoraMerger {
  /** Metadata key under which the recipe JSON is stored. */
  public static final String RECIPE_KEY = "loramerge_recipe";

  private final ImmutableList<Input> inputs;
  private final MergeAlgorithm algorithm;
  private final Optional<Integer> rank;
  private final Optional<Integer> convRank;
  private final boolean exactSvd;
  private final RankRule rankRule;
  private final Optional<PostPrune> prune;
  private final Optional<Device> device;
  private final int threads;
  /** The dense re-ranks' test matrices: a pure function of the shape, drawn once per merger. */
  private final RandomizedSvd.Sketches sketches = new RandomizedSvd.Sketches(0);
  private final Optional<DType> dtype;
  private final MergeListener listener;
  private final String name;
  private final ImmutableMap<String, Object> recipeExtras;
  private final Optional<Double> svdClamp;
  private final double scale;
  private final boolean allowUnmatched;
  private final Optional<Architecture> architecture;

  /** An adapter, its weight and its block weights. */
  private record Input(LoraAdapter adapter, double weight, BlockWeights blocks) {
    double weight(ModuleKey key) {
      return weight * blocks.weight(key);
    }
  }

  private LoraMerger(Builder builder) {
    this.inputs = ImmutableList.copyOf(builder.inputs);
    this.algorithm = builder.algorithm;
    this.rank = builder.rank;
    this.convRank = builder.convRank;
    this.exactSvd = builder.exactSvd;
    this.rankRule = builder.rankRule;
    this.prune = builder.prune;
    this.device = builder.device;
    this.threads = builder.threads;
    this.dtype = builder.dtype;
    this.listener = builder.listener;
    this.name = builder.name;
    this.recipeExtras = ImmutableMap.copyOf(builder.recipeExtras);
    this.svdClamp = builder.svdClamp;
    this.scale = builder.scale;
    this.allowUnmatched = builder.allowUnmatched;
    this.architecture = builder.architecture;
  }

  /** A builder with no adapters, the exact weighted sum and one thread per core. */
  public static Builder builder() {
    return new Builder();
  }

  /** A builder holding this merger's settings. */
  public Builder toBuilder() {
    Builder builder = new Builder();
    builder.inputs.addAll(inputs);
    builder.algorithm = algorithm;
    builder.rank = rank;
    builder.convRank = convRank;
    builder.exactSvd = exactSvd;
    builder.rankRule = rankRule;
    builder.prune = prune;
    builder.device = device;
    builder.threads = threads;
    builder.dtype = dtype;
    builder.listener = listener;
    builder.name = name;
    builder.recipeExtras.putAll(recipeExtras);
    builder.svdClamp = svdClamp;
    builder.scale = scale;
    builder.allowUnmatched = allowUnmatched;
    builder.architecture = architecture;
    return builder;
  }

  /**
   * Merges the adapters.
   *
   * @throws LoraMergeException when modules do not fit (shapes differ between adapters, ranks
   *     differ for a method that needs them equal, the result is not finite)
   */
  public LoraAdapter merge() {
    SortedSet<ModuleKey> keys = new TreeSet<>();
    for (Input input : inputs) {
      keys.addAll(input.adapter().modules().keySet());
    }
    DType outputType = dtype.orElseGet(this::commonInputType);
    TreeMap<ModuleKey, LoraModule> merged = new TreeMap<>();
    AtomicInteger done = new AtomicInteger();
    ExecutorService pool = Executors.newFixedThreadPool(threads, runnable -> {
      Thread thread = new Thread(runnable, "lora-merge");
      thread.setDaemon(true);
      return thread;
    });
    DenseBuffers buffers = new DenseBuffers();
    try (LazyManager root = new LazyManager(() -> device.map(NDManager::newBaseManager).orElseGet(NDManager::newBaseManager))) {
      List<Future<Optional<LoraModule>>> futures = new ArrayList<>();
      for (ModuleKey key : keys) {
        futures.add(
            pool.submit(
                () -> {
                  Optional<LoraModule> module = mergeModule(root, buffers, key, outputType);
                  listener.moduleMerged(done.incrementAndGet(), keys.size(), key);
                  return module;
                }));
      }
      for (Future<Optional<LoraModule>> future : futures) {
        future.get().ifPresent(module -> merged.put(module.key(), module));
      }
    } catch (ExecutionException e) {
      Throwable cause = e.getCause();
      if (cause instanceof RuntimeException) {
        throw (RuntimeException) cause;
      }
      throw new LoraMergeException("merge failed: " + cause, cause);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new LoraMergeException("merge interrupted", e);
    } finally {
      pool.shutdownNow();
    }
    LoraAdapter.Builder result = LoraAdapter.builder().name(name);
    merged.values().forEach(result::add);
    result.putMetadata(RECIPE_KEY, Recipes.toJson(this::recipe));
    return result.build();
  }

  /**
   * Fuses the merged update into {@code target}: {@code W' = W + scale·ΔW} for every module, with
   * ΔW the exact weighted sum {@code Σ wᵢ·sᵢ·BᵢAᵢ} (with block weights) or the update of the
   * chosen algorithm. Each weight is computed in float64 and rounded once to its own dtype, so it
   * is the exact value correctly rounded (for an fp16 base, PEFT and diffusers round the factors
   * and the delta first and land up to ~1e-3 away).
   *
   * <p>A module's weight is looked up as {@code <path>.weight} (a diffusers UNet or text-encoder
   * file, or a DJL TorchScript block), {@code <component>.<path>.weight} (a whole pipeline), and in
   * the original single-file checkpoint's names ({@code model.diffusion_model.input_blocks…},
   * {@code cond_stage_model.transformer…}, {@code conditioner.embedders.0.transformer…}) for the
   * adapters' architecture. Nothing is changed when a module
   * does not fit its weight, when a module has no weight (unless {@link
   * Builder#allowUnmatched(boolean)}), or when a fused value is not finite or beyond its dtype's
   * range.
   *
   * @return the fuse's report, and for in-memory targets the handle that undoes it bit for bit
   * @throws LoraMergeException when modules do not fit the target or a result is out of range
   * @throws java.io.IOException when the target's file cannot be read or written
   */
  public FusedLora fuseInto(WeightTarget target) throws java.io.IOException {
    return fuse(target, scale, "fuse");
  }

  /**
   * Subtracts the merged update from {@code target}, {@code W' = W − scale·ΔW} rounded once,
   * which is how PEFT unmerges: in fp16 it need not give back the original bits. To restore them
   * exactly, use {@link FusedLora#unfuse()} in memory, or the original file for files.
   */
  public FusedLora unfuseFrom(WeightTarget target) throws java.io.IOException {
    return fuse(target, -scale, "unfuse");
  }

  private FusedLora fuse(WeightTarget target, double factor, String operation) throws java.io.IOException {
    checkNotNull(target, "target");
    ImmutableMap<String, WeightInfo> weights = target.weights();
    Optional<Architecture> arch = architecture.or(() -> Architecture.detect(inputs.get(0).adapter()));
    SortedSet<ModuleKey> keys = new TreeSet<>();
    for (Input input : inputs) {
      for (ModuleKey key : input.adapter().modules().keySet()) {
        if (input.weight(key) != 0) {
          keys.add(key);
        }
      }
    }
    ImmutableSortedMap.Builder<ModuleKey, String> matched = ImmutableSortedMap.naturalOrder();
    ImmutableList.Builder<ModuleKey> unmatched = ImmutableList.builder();
    Map<String, ModuleKey> byWeight = new java.util.LinkedHashMap<>();
    for (ModuleKey key : keys) {
      Optional<String> name = BaseWeightNames.resolve(key, arch, weights.keySet());
      if (name.isEmpty()) {
        unmatched.add(key);
        continue;
      }
      checkFits(key, name.get(), weights.get(name.get()));
      ModuleKey previous = byWeight.put(name.get(), key);
      if (previous != null) {
        throw new LoraMergeException(
            String.format(Locale.ROOT, "modules '%s' and '%s' both resolve to weight '%s'", previous, key, name.get()));
      }
      matched.put(key, name.get());
    }
    FuseReport report = new FuseReport(matched.build(), unmatched.build());
    if (report.matched().isEmpty()) {
      ModuleKey example = keys.first();
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "none of the adapters' %d modules has a weight in the target (module '%s' was looked for as %s);"
                  + " is the base for another architecture?",
              keys.size(),
              example,
              BaseWeightNames.candidates(example, arch)));
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
              BaseWeightNames.candidates(report.unmatched().get(0), arch),
              report.matched().size()));
    }
    Optional<WeightTarget.Restorer> restorer =
        target.apply(new Update(ImmutableMap.copyOf(byWeight), factor, operation));
    return new FusedLora(report, restorer);
  }

  private void checkFits(ModuleKey key, String name, WeightInfo weight) {
    LoraModule module = firstPresent(key);
    long[] expected = module.weightShape();
    long[] found = weight.shape();
    if (found.length == 0 || found[0] != expected[0] || weight.numel() != TensorData.numel(expected)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' updates a %s weight but base weight '%s' is %s; is the adapter for another"
                  + " architecture?",
              key,
              java.util.Arrays.toString(expected),
              name,
              weight));
    }
    if (!weight.dtype().isFloatingPoint() || weight.dtype().byteSize() < 2) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "base weight '%s' is %s; can fuse only into F64, F32, F16 or BF16", name, weight));
    }
  }

  /** The merged update of the matched modules, computed per weight on demand. */
  private final class Update implements WeightUpdate {
    private final ImmutableMap<String, ModuleKey> modules;
    private final double factor;
    private final String operation;
    private final DenseBuffers buffers = new DenseBuffers();

    Update(ImmutableMap<String, ModuleKey> modules, double factor, String operation) {
      this.modules = modules;
      this.factor = factor;
      this.operation = operation;
    }

    @Override
    public ImmutableSet<String> names() {
      return modules.keySet();
    }

    @Override
    public void apply(String name, ByteBuffer weight, WeightInfo info, ByteBuffer into, DType dtype) {
      ModuleKey key = modules.get(name);
      checkArgument(key != null, "this update does not change weight '%s'", name);
      String label = String.format(Locale.ROOT, "module '%s' (weight '%s')", key, name);
      try (LazyManager manager = new LazyManager(NDManager::newBaseManager)) {
        double[][] factors = fusedFactors(manager, key);
        for (int i = 0; i < factors[0].length; i++) {
          factors[0][i] *= factor;
        }
        int rank = factors[0].length / Math.toIntExact(info.shape()[0]);
        Fusion.fuse(manager, weight, info.dtype(), info.shape(), factors[0], factors[1], rank, into, dtype, label);
      }
    }

    /**
     * The merged factors of {@code key}'s module in float64 (up, then down). A cat with no pruning,
     * the default, is built here in Java, where libtorch would make a handful of small arrays per
     * weight: each wakes libtorch's OpenMP worker, which then spins for milliseconds on a core the
     * Java fusion needs.
     */
    private double[][] fusedFactors(LazyManager manager, ModuleKey key) {
      if (algorithm != CatAlgorithm.INSTANCE || prune.isPresent()) {
        DataType computeType = algorithm.exactInFloat64() ? DataType.FLOAT64 : DataType.FLOAT32;
        NDArray[] factors = mergedFactors(manager, buffers, key, computeType, Optional.empty()).orElseThrow().arrays(manager.get());
        return new double[][] {
          prunedFactor(factors[0].toType(computeType, false)).toType(DataType.FLOAT64, false).toDoubleArray(),
          prunedFactor(factors[1].toType(computeType, false)).toType(DataType.FLOAT64, false).toDoubleArray()
        };
      }
      List<Input> present = presentIndices(key).stream().map(inputs::get).toList();
      checkShapes(key, present);
      List<LoraModule> modules = present.stream().map(input -> input.adapter().modules().get(key)).toList();
      double[] coefficients = present.stream().mapToDouble(input -> input.weight(key)).toArray();
      for (int i = 0; i < coefficients.length; i++) {
        coefficients[i] *= modules.get(i).scale();
      }
      return CatAlgorithm.doubleFactors(modules, coefficients);
    }

    @Override
    public String recipe() {
      return Recipes.toJson(
          () -> {
            Map<String, Object> recipe = new java.util.LinkedHashMap<>();
            recipe.put("operation", operation);
            recipe.put("scale", Math.abs(factor));
            recipe.putAll(LoraMerger.this.recipe());
            return recipe;
          });
    }

    @Override
    public void progress(long done, long total) {
      listener.weightsWritten(done, total);
    }
  }

  private NDArray prunedFactor(NDArray factor) {
    if (prune.isEmpty()) {
      return factor;
    }
    float[] values = factor.toType(DataType.FLOAT32, false).toFloatArray();
    prune.get().apply(values);
    return factor.getManager().create(values, factor.getShape());
  }

  private Map<String, Object> recipe() {
    Map<String, Object> recipe = new java.util.LinkedHashMap<>();
    recipe.put("algorithm", algorithm.name());
    recipe.put("parameters", algorithm.parameters());
    List<Object> adapters = new ArrayList<>();
    for (Input input : inputs) {
      Map<String, Object> entry = new java.util.LinkedHashMap<>();
      entry.put("name", input.adapter().name());
      entry.put("weight", input.weight());
      if (input.blocks() != BlockWeights.uniform()) {
        entry.put("blocks", input.blocks().toString());
      }
      adapters.add(entry);
    }
    recipe.put("inputs", adapters);
    rank.ifPresent(value -> recipe.put("rank", value));
    convRank.ifPresent(value -> recipe.put("conv_rank", value));
    if (rankRule.method() != RankRule.Method.FIXED) {
      recipe.put("rank_rule", rankRule.toString());
    }
    svdClamp.ifPresent(value -> recipe.put("svd_clamp", value));
    prune.ifPresent(value -> recipe.put("prune", value.toString()));
    recipe.putAll(recipeExtras);
    recipe.put("library", Recipes.libraryVersion());
    return recipe;
  }

  private DType commonInputType() {
    List<DType> types =
        inputs.stream()
            .flatMap(input -> input.adapter().modules().values().stream())
            .map(LoraModule::dtype)
            .distinct()
            .collect(Collectors.toList());
    return types.size() == 1 ? types.get(0) : DType.F32;
  }

  private Optional<LoraModule> mergeModule(LazyManager root, DenseBuffers buffers, ModuleKey key, DType outputType) {
    try (LazyManager manager = new LazyManager(() -> root.get().newSubManager())) {
      return mergedFactors(manager, buffers, key, DataType.FLOAT32, Optional.of(outputType))
          .map(merged -> toModule(key, firstPresent(key), merged, outputType));
    }
  }

  private LoraModule firstPresent(ModuleKey key) {
    return inputs.stream()
        .filter(input -> input.weight(key) != 0)
        .flatMap(input -> input.adapter().module(key).stream())
        .findFirst()
        .orElseThrow();
  }

  /**
   * The merged update of {@code key} as factors {up (m×r), down (r×in·k·k)} with scale 1, owned
   * by {@code manager}, before rounding to an output type; empty when no input has the module.
   * The manager is asked for only when arrays are made, so that merges the algorithm does on
   * values never start the engine (about half a second).
   * {@code computeType} is the type the inputs' factors are handed to the algorithm in; {@code
   * outputType} is the type a merge writes (empty in a fuse), which an algorithm may encode its
   * factors straight into when nothing is done to them after it.
   */
  private Optional<Merged> mergedFactors(
      Supplier<NDManager> manager, DenseBuffers buffers, ModuleKey key, DataType computeType, Optional<DType> outputType) {
    List<Integer> indices = presentIndices(key);
    List<Input> present = indices.stream().map(inputs::get).toList();
    if (present.isEmpty()) {
      return Optional.empty();
    }
    LoraModule first = present.get(0).adapter().modules().get(key);
    checkShapes(key, present);
    if (algorithm.requiresEqualRanks()) {
      checkEqualRanks(key, present);
    }
    ImmutableList.Builder<ModuleInput> moduleInputs = ImmutableList.builder();
    for (int i = 0; i < present.size(); i++) {
      moduleInputs.add(
          new Factors(
              indices.get(i), present.get(i).adapter().modules().get(key), present.get(i).weight(key), manager, computeType));
    }
    ImmutableList<ModuleInput> built = moduleInputs.build();
    int largestRank = built.stream().mapToInt(input -> input.module().rank()).max().orElseThrow();
    Optional<Integer> explicit = first.kind() == LoraModule.Kind.CONV && convRank.isPresent() ? convRank : rank;
    int target = explicit.orElse(largestRank);
    // An algorithm that does not re-rank gives at most the inputs' ranks together, so with no
    // explicit rank below that its factors are written as they are, and may come encoded.
    int rankSum = built.stream().mapToInt(input -> input.module().rank()).sum();
    Optional<DType> finalType =
        outputType.filter(type -> !algorithm.reRanks() && (explicit.isEmpty() || rankSum <= target));
    ModuleMerge merge = new Merge(key, built, manager, target, computeType == DataType.FLOAT64, finalType);
    ModuleUpdate update = algorithm.merge(merge);
    if (update.isEncoded()) {
      return Optional.of(Merged.ofTensors(checkEncoded(key, update, finalType, rankSum)));
    }
    if (update.isDense()) {
      Optional<float[]> values = update.denseValues();
      ByteBuffer buffer = values.map(array -> buffers.take(Math.multiplyExact(array.length, Float.BYTES))).orElse(null);
      NDArray dense = values.isPresent()
          ? manager.get().create(
              DenseBuffers.holding(buffer, values.get()),
              new Shape(values.get().length / update.denseColumns(), update.denseColumns()),
              DataType.FLOAT32)
          : update.dense().orElseThrow();
      NDArray[] factors;
      try {
        factors =
            exactSvd || RandomizedSvd.exactIsCheap(dense.getShape().get(0), dense.getShape().get(1))
                ? RandomizedSvd.exact(manager.get(), dense, sigma -> rankRule.rank(sigma, target))
                : RandomizedSvd.truncate(
                    manager.get(), dense, target, sigma -> rankRule.rank(sigma, target), sketches);
      } finally {
        if (buffer != null) {
          dense.close();
          buffers.give(buffer);
        }
      }
      return Optional.of(Merged.of(clamp(factors)));
    }
    Merged merged = update.isValues()
        ? Merged.ofFloats(update.upValues().orElseThrow(), update.downValues().orElseThrow(), update.rank())
        : Merged.of(new NDArray[] {update.up().orElseThrow(), update.down().orElseThrow()});
    if (algorithm.reRanks() || (explicit.isPresent() && merged.rank() > target)) {
      ToIntFunction<double[]> rankOf = sigma -> rankRule.rank(sigma, target);
      int rows = Math.toIntExact(first.outFeatures());
      double[][] factors = merged.up() != null
          ? FactoredSvd.truncate(
              merged.up().toType(DataType.FLOAT64, false).toDoubleArray(),
              merged.down().toType(DataType.FLOAT64, false).toDoubleArray(),
              merged.rank(),
              rankOf)
          : FactoredSvd.truncate(merged.upValues(), merged.downValues(), merged.rank(), rankOf);
      return Optional.of(Merged.ofDoubles(clamp(factors), rows));
    }
    return Optional.of(merged);
  }

  /**
   * Merged factors with scale 1: NDArrays, float32 values when the algorithm gave values and
   * nothing re-ranked them, the float64 values of the factored SVD, or an algorithm's tensors,
   * already in the output type. Values are rounded to the output type in Java, with no native
   * call.
   */
  private record Merged(
      NDArray up, NDArray down, float[] upValues, float[] downValues, double[] upDoubles, double[] downDoubles, int valuesRank,
      TensorData[] tensors) {
    static Merged of(NDArray[] factors) {
      return new Merged(factors[0], factors[1], null, null, null, null, 0, null);
    }

    static Merged ofFloats(float[] up, float[] down, int rank) {
      return new Merged(null, null, up, down, null, null, rank, null);
    }

    /** Re-ranked factors {up ({@code rows}×k), down (k×n)}, row-major. */
    static Merged ofDoubles(double[][] factors, int rows) {
      return new Merged(null, null, null, null, factors[0], factors[1], factors[0].length / rows, null);
    }

    /** Factors {up (m×r), down (r×n)} already in the output type. */
    static Merged ofTensors(TensorData[] factors) {
      return new Merged(null, null, null, null, null, null, Math.toIntExact(factors[0].dim(1)), factors);
    }

    int rank() {
      return up != null ? Math.toIntExact(up.getShape().get(1)) : valuesRank;
    }

    /** The factors as arrays, made in {@code manager} from values where needed. */
    NDArray[] arrays(NDManager manager) {
      if (up != null) {
        return new NDArray[] {up, down};
      }
      if (upDoubles != null) {
        return new NDArray[] {
          manager.create(upDoubles, new Shape(upDoubles.length / valuesRank, valuesRank)),
          manager.create(downDoubles, new Shape(valuesRank, downDoubles.length / valuesRank))
        };
      }
      return new NDArray[] {
        manager.create(upValues, new Shape(upValues.length / valuesRank, valuesRank)),
        manager.create(downValues, new Shape(valuesRank, downValues.length / valuesRank))
      };
    }
  }

  /**
   * PEFT's {@code svd_clamp}: both re-ranked factors clipped to [−h, h], h the {@code svdClamp}
   * quantile (linear interpolation, as torch.quantile) of all their signed entries together.
   */
  private NDArray[] clamp(NDArray[] factors) {
    if (svdClamp.isEmpty()) {
      return factors;
    }
    double limit =
        clampLimit(
            factors[0].toType(DataType.FLOAT64, false).toDoubleArray(),
            factors[1].toType(DataType.FLOAT64, false).toDoubleArray());
    return new NDArray[] {factors[0].clip(-limit, limit), factors[1].clip(-limit, limit)};
  }

  /** {@link #clamp(NDArray[])} of float64 factors, in place. */
  private double[][] clamp(double[][] factors) {
    if (svdClamp.isPresent()) {
      double limit = clampLimit(factors[0], factors[1]);
      for (double[] factor : factors) {
        for (int i = 0; i < factor.length; i++) {
          factor[i] = Math.max(-limit, Math.min(limit, factor[i]));
        }
      }
    }
    return factors;
  }

  private double clampLimit(double[] up, double[] down) {
    double[] all = new double[up.length + down.length];
    System.arraycopy(up, 0, all, 0, up.length);
    System.arraycopy(down, 0, all, up.length, down.length);
    java.util.Arrays.sort(all);
    double position = svdClamp.orElseThrow() * (all.length - 1);
    int below = (int) Math.floor(position);
    int above = Math.min(below + 1, all.length - 1);
    return all[below] + (position - below) * (all[above] - all[below]);
  }


  /** {up, down} of an encoded update, checked against what the merge offered. */
  private TensorData[] checkEncoded(ModuleKey key, ModuleUpdate update, Optional<DType> offered, int rankSum) {
    TensorData up = update.encodedUp().orElseThrow();
    TensorData down = update.encodedDown().orElseThrow();
    if (offered.isEmpty() || up.dtype() != offered.get() || up.dim(1) > rankSum) {
      throw new IllegalStateException(
          String.format(
              Locale.ROOT,
              "module '%s': algorithm %s gave factors of %s at rank %d, but the merge %s",
              key, algorithm, up.dtype().safetensorsName(), up.dim(1),
              offered.map(type -> "offered " + type.safetensorsName() + " up to rank " + rankSum).orElse("offered no output type")));
    }
    return new TensorData[] {up, down};
  }

  private LoraModule toModule(ModuleKey key, LoraModule like, Merged merged, DType outputType) {
    long rank = merged.rank();
    long[] downShape = like.down().shape();
    downShape[0] = rank;
    long[] upShape = like.up().shape();
    upShape[1] = rank;
    TensorData newDown;
    TensorData newUp;
    if (merged.tensors() != null) {
      newDown = pruned(merged.tensors()[1].reshape(downShape));
      newUp = pruned(merged.tensors()[0].reshape(upShape));
    } else if (merged.up() != null) {
      newDown = pruned(NdArrays.toTensor(merged.down(), outputType, downShape));
      newUp = pruned(NdArrays.toTensor(merged.up(), outputType, upShape));
    } else if (merged.upDoubles() != null) {
      newDown = pruned(TensorData.ofDoubles(merged.downDoubles(), outputType, downShape));
      newUp = pruned(TensorData.ofDoubles(merged.upDoubles(), outputType, upShape));
    } else {
      newDown = pruned(TensorData.ofFloats(merged.downValues(), outputType, downShape));
      newUp = pruned(TensorData.ofFloats(merged.upValues(), outputType, upShape));
    }
    checkFinite(key, newDown, "down");
    checkFinite(key, newUp, "up");
    return LoraModule.of(key, newDown, newUp, rank);
  }

  private TensorData pruned(TensorData factor) {
    if (prune.isEmpty()) {
      return factor;
    }
    float[] values = factor.toFloatArray();
    prune.get().apply(values);
    TensorData pruned = TensorData.ofFloats(values, factor.shape());
    return factor.dtype() == DType.F32 ? pruned : pruned.to(factor.dtype());
  }

  private static void checkFinite(ModuleKey key, TensorData tensor, String factor) {
    long index = Fusion.firstNonFinite(tensor.bytes(), tensor.dtype());
    if (index >= 0) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s': merged %s factor has %s at element %d (of %s %s)",
              key, factor, tensor.getDouble(index), index, tensor.dtype().safetensorsName(),
              java.util.Arrays.toString(tensor.shape())));
    }
  }

  /** The indices of the inputs that have a module for {@code key} and a weight other than 0 on it. */
  private List<Integer> presentIndices(ModuleKey key) {
    List<Integer> indices = new ArrayList<>();
    for (int i = 0; i < inputs.size(); i++) {
      Input input = inputs.get(i);
      if (input.weight(key) != 0 && input.adapter().modules().containsKey(key)) {
        indices.add(i);
      }
    }
    return indices;
  }

  private void checkShapes(ModuleKey key, List<Input> present) {
    LoraModule first = present.get(0).adapter().modules().get(key);
    for (Input input : present) {
      LoraModule module = input.adapter().modules().get(key);
      if (!java.util.Arrays.equals(module.weightShape(), first.weightShape())) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "module '%s' updates %s in adapter '%s' but %s in adapter '%s'; the adapters are"
                    + " for different models",
                key,
                java.util.Arrays.toString(first.weightShape()),
                present.get(0).adapter().name(),
                java.util.Arrays.toString(module.weightShape()),
                input.adapter().name()));
      }
    }
  }

  private void checkEqualRanks(ModuleKey key, List<Input> present) {
    List<Integer> ranks =
        present.stream().map(input -> input.adapter().modules().get(key).rank()).collect(Collectors.toList());
    if (ranks.stream().distinct().count() > 1) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "%s needs equal ranks, but module '%s' has ranks %s in adapters %s; use cat or an"
                  + " *_svd method",
              algorithm.name(),
              key,
              ranks,
              present.stream().map(input -> "'" + input.adapter().name() + "'").collect(Collectors.joining(", "))));
    }
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "LoraMerger{inputs=%s, algorithm=%s, rank=%s, convRank=%s, rankRule=%s, exactSvd=%s, svdClamp=%s, prune=%s,"
            + " threads=%d, dtype=%s, device=%s}",
        inputs.stream().map(input -> input.adapter().name() + "=" + input.weight()).collect(Collectors.toList()),
        algorithm,
        rank.map(String::valueOf).orElse("largest input"),
        convRank.map(String::valueOf).orElse("rank"),
        rankRule,
        exactSvd,
        svdClamp.map(String::valueOf).orElse("none"),
        prune.map(String::valueOf).orElse("none"),
        threads,
        dtype.map(DType::safetensorsName).orElse("inputs'"),
        device.map(String::valueOf).orElse("default"));
  }

  /**
   * Native buffers for dense updates given as values, handed from one module to the next for
   * one merge or fuse: a fresh direct buffer per module is zeroed and faulted in page by page, and
   * freed only by a collection (gigabytes for the {@code *_svd} methods on SDXL).
   */
  private static final class DenseBuffers {
    private final ConcurrentLinkedDeque<ByteBuffer> free = new ConcurrentLinkedDeque<>();

    /** A buffer of at least {@code bytes}, for {@link #holding}. */
    ByteBuffer take(int bytes) {
      ByteBuffer buffer = free.pollFirst();
      return buffer == null || buffer.capacity() < bytes ? ByteBuffer.allocateDirect(bytes) : buffer;
    }

    /** A native-order view of the start of {@code buffer} holding {@code values}. */
    static ByteBuffer holding(ByteBuffer buffer, float[] values) {
      ByteBuffer view = buffer.duplicate().clear().limit(values.length * Float.BYTES).slice().order(ByteOrder.nativeOrder());
      view.asFloatBuffer().put(values);
      return view;
    }

    /** Returns a buffer from {@link #take}; nothing may use it afterwards. */
    void give(ByteBuffer buffer) {
      free.offerFirst(buffer);
    }
  }

  /** A manager made on first use (by one thread at a time) and closed with this, if made. */
  private static final class LazyManager implements Supplier<NDManager>, AutoCloseable {
    private final Supplier<NDManager> factory;
    private NDManager manager;

    LazyManager(Supplier<NDManager> factory) {
      this.factory = factory;
    }

    @Override
    public synchronized NDManager get() {
      if (manager == null) {
        manager = factory.get();
      }
      return manager;
    }

    @Override
    public synchronized void close() {
      if (manager != null) {
        manager.close();
      }
    }
  }

  /** One input's factors for one module, converted on first use in the module's manager. */
  private static final class Factors implements ModuleInput {
    private final int index;
    private final LoraModule module;
    private final double weight;
    private final Supplier<NDManager> manager;
    private final DataType computeType;
    private NDArray down;
    private NDArray up;
    private NDArray delta;

    Factors(int index, LoraModule module, double weight, Supplier<NDManager> manager, DataType computeType) {
      this.index = index;
      this.module = module;
      this.weight = weight;
      this.manager = manager;
      this.computeType = computeType;
    }

    @Override
    public int index() {
      return index;
    }

    @Override
    public LoraModule module() {
      return module;
    }

    @Override
    public double weight() {
      return weight;
    }

    @Override
    public double scale() {
      return module.scale();
    }

    @Override
    public NDArray down() {
      if (down == null) {
        down = load(module.down(), module.rank(), module.down().numel() / module.rank());
      }
      return down;
    }

    @Override
    public NDArray up() {
      if (up == null) {
        up = load(module.up(), module.outFeatures(), module.rank());
      }
      return up;
    }

    private NDArray load(TensorData tensor, long... shape) {
      if (computeType == DataType.FLOAT64 && tensor.dtype() == DType.F64) {
        return manager.get().create(tensor.toDoubleArray(), new Shape(shape));
      }
      // Factors narrower than F64 widen to float32, and on to float64, exactly.
      NDArray single = NdArrays.float32(manager.get(), tensor, shape);
      return computeType == DataType.FLOAT64 ? single.toType(DataType.FLOAT64, false) : single;
    }

    @Override
    public float[] downValues() {
      return module.down().toFloatArray();
    }

    @Override
    public float[] upValues() {
      return module.up().toFloatArray();
    }

    @Override
    public void readDown(int first, float[] out, int count) {
      module.down().readFloats(first, out, count);
    }

    @Override
    public void readUp(int first, float[] out, int count) {
      module.up().readFloats(first, out, count);
    }

    @Override
    public NDArray delta() {
      if (delta == null) {
        delta = product();
      }
      return delta;
    }

    @Override
    public float[] deltaValues() {
      if (delta != null) {
        return NdArrays.floatValues(delta);
      }
      if (computeType == DataType.FLOAT32 && LowRankProducts.VECTOR_API) {
        return LowRankProducts.product(upValues(), downValues(), module.rank(), scale());
      }
      try (NDArray product = product()) {
        return NdArrays.floatValues(product);
      }
    }

    /**
     * s·B·A as PEFT computes it, (B·A)·s. A power-of-two s scales every partial sum exactly, so
     * it goes into the smaller factor instead, which gives the same bits (short of subnormal or
     * overflowing entries) and saves a pass over the m×n product.
     */
    private NDArray product() {
      double scale = scale();
      if (scale == 1) {
        return up().matMul(down());
      }
      if (!NdArrays.isPowerOfTwo(scale)) {
        return up().matMul(down()).muli(scale);
      }
      if (up().size() < down().size()) {
        try (NDArray scaledUp = up().mul(scale)) {
          return scaledUp.matMul(down());
        }
      }
      try (NDArray scaledDown = down().mul(scale)) {
        return up().matMul(scaledDown);
      }
    }
  }

  /** {@link ModuleMerge} for one module. */
  private final class Merge implements ModuleMerge {
    private final ModuleKey key;
    private final ImmutableList<ModuleInput> moduleInputs;
    private final Supplier<NDManager> manager;
    private final int targetRank;
    private final boolean arraysWanted;
    private final Optional<DType> outputType;

    Merge(
        ModuleKey key, ImmutableList<ModuleInput> moduleInputs, Supplier<NDManager> manager, int targetRank, boolean arraysWanted,
        Optional<DType> outputType) {
      this.key = key;
      this.moduleInputs = moduleInputs;
      this.manager = manager;
      this.targetRank = targetRank;
      this.arraysWanted = arraysWanted;
      this.outputType = outputType;
    }

    @Override
    public Optional<DType> outputType() {
      return outputType;
    }

    @Override
    public boolean arraysWanted() {
      return arraysWanted;
    }

    @Override
    public ModuleKey key() {
      return key;
    }

    @Override
    public ImmutableList<ModuleInput> inputs() {
      return moduleInputs;
    }

    @Override
    public NDManager manager() {
      return manager.get();
    }

    @Override
    public int targetRank() {
      return targetRank;
    }

    @Override
    public long streamSeed(long seed, int adapterIndex, String stream) {
      return Randoms.streamSeed(seed, key.toString(), adapterIndex, stream);
    }
  }

  /** Collects adapters, weights and options; not thread-safe. */
  public static final class Builder {
    private final List<Input> inputs = new ArrayList<>();
    private MergeAlgorithm algorithm = MergeAlgorithm.cat();
    private Optional<Integer> rank = Optional.empty();
    private Optional<Integer> convRank = Optional.empty();
    private boolean exactSvd;
    private RankRule rankRule = RankRule.fixed();
    private Optional<PostPrune> prune = Optional.empty();
    private Optional<Device> device = Optional.empty();
    private int threads = Runtime.getRuntime().availableProcessors();
    private Optional<DType> dtype = Optional.empty();
    private MergeListener listener = MergeListener.NONE;
    private String name = "merged";
    private final java.util.Map<String, Object> recipeExtras = new java.util.LinkedHashMap<>();
    private Optional<Double> svdClamp = Optional.empty();
    private double scale = 1;
    private boolean allowUnmatched;
    private Optional<Architecture> architecture = Optional.empty();

    private Builder() {}

    /** Adds {@code adapter} with {@code weight} (any finite number; negative subtracts). */
    @CanIgnoreReturnValue
    public Builder add(LoraAdapter adapter, double weight) {
      return add(adapter, weight, BlockWeights.uniform());
    }

    /** Adds {@code adapter} with {@code weight}, each module further scaled by its block's weight. */
    @CanIgnoreReturnValue
    public Builder add(LoraAdapter adapter, double weight, BlockWeights blocks) {
      checkNotNull(adapter, "adapter");
      checkNotNull(blocks, "blocks");
      checkArgument(Double.isFinite(weight), "weight must be finite, got %s for adapter '%s'", weight, adapter.name());
      inputs.add(new Input(adapter, weight, blocks));
      return this;
    }

    /** The merge method (default: the exact weighted sum). */
    @CanIgnoreReturnValue
    public Builder algorithm(MergeAlgorithm algorithm) {
      this.algorithm = checkNotNull(algorithm, "algorithm");
      return this;
    }

    /** The target rank of re-ranked results (default: the largest input rank). */
    @CanIgnoreReturnValue
    public Builder rank(int rank) {
      checkArgument(rank > 0, "rank must be positive, got %s", rank);
      this.rank = Optional.of(rank);
      return this;
    }

    /** A separate target rank for k×k convolutions (default: {@link #rank(int)}). */
    @CanIgnoreReturnValue
    public Builder convRank(int convRank) {
      checkArgument(convRank > 0, "convRank must be positive, got %s", convRank);
      this.convRank = Optional.of(convRank);
      return this;
    }

    /**
     * Re-rank dense updates (the {@code *_svd} methods that prune or elect signs on full deltas)
     * by an exact SVD instead of the randomized one (default false: the randomized SVD, see
     * {@link RandomizedSvd}, is within 1 % of the optimal truncation and far faster).
     */
    @CanIgnoreReturnValue
    public Builder exactSvd(boolean exactSvd) {
      this.exactSvd = exactSvd;
      return this;
    }

    /** Worker threads (default: one per core); results do not depend on it. */
    @CanIgnoreReturnValue
    public Builder threads(int threads) {
      checkArgument(threads > 0, "threads must be positive, got %s", threads);
      this.threads = threads;
      return this;
    }

    /** The factors' element type (default: the inputs' common type, else F32). */
    @CanIgnoreReturnValue
    public Builder dtype(DType dtype) {
      checkArgument(
          dtype == DType.F32 || dtype == DType.F16 || dtype == DType.BF16 || dtype == DType.F64,
          "merged factors can be F64, F32, F16 or BF16, got %s", dtype);
      this.dtype = Optional.of(dtype);
      return this;
    }

    /** Hears each merged module. */
    @CanIgnoreReturnValue
    public Builder listener(MergeListener listener) {
      this.listener = checkNotNull(listener, "listener");
      return this;
    }

    /** The merged adapter's name (default "merged"). */
    @CanIgnoreReturnValue
    public Builder name(String name) {
      this.name = checkNotNull(name, "name");
      return this;
    }

    /**
     * The device the arithmetic runs on (default: DJL's default device, a GPU when it sees one).
     * Results are copied back to host memory either way.
     */
    @CanIgnoreReturnValue
    public Builder device(Device device) {
      this.device = Optional.of(checkNotNull(device, "device"));
      return this;
    }

    /** Prunes every merged factor after the method and any re-ranking. */
    @CanIgnoreReturnValue
    public Builder prune(PostPrune prune) {
      this.prune = Optional.of(checkNotNull(prune, "prune"));
      return this;
    }

    /**
     * How re-ranked modules choose their rank, capped at the target rank (default: the target
     * rank itself).
     */
    @CanIgnoreReturnValue
    public Builder rankRule(RankRule rankRule) {
      this.rankRule = checkNotNull(rankRule, "rankRule");
      return this;
    }

    /**
     * Clips re-ranked factors at the {@code quantile} of their entries, as PEFT's {@code
     * svd_clamp} (kohya always uses 0.99).
     */
    @CanIgnoreReturnValue
    public Builder svdClamp(double quantile) {
      checkArgument(quantile > 0 && quantile <= 1, "svd clamp quantile must be in (0, 1], got %s", quantile);
      this.svdClamp = Optional.of(quantile);
      return this;
    }

    /** Adds an entry to the recipe recorded in the output's metadata (e.g. input file digests). */
    @CanIgnoreReturnValue
    public Builder recipe(String key, Object value) {
      checkNotNull(key, "key");
      recipeExtras.put(key, checkNotNull(value, "value"));
      return this;
    }

    /**
     * The factor a fuse multiplies the merged update by: diffusers' {@code lora_scale}; default 1.
     * Merges ignore it.
     */
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
     * The architecture whose original checkpoint names a fuse may look weights up by (default:
     * detected from the first adapter).
     */
    @CanIgnoreReturnValue
    public Builder architecture(Architecture architecture) {
      this.architecture = Optional.of(checkNotNull(architecture, "architecture"));
      return this;
    }

    /** Shortcut for {@code build().fuseInto(target)}. */
    public FusedLora fuseInto(WeightTarget target) throws java.io.IOException {
      return build().fuseInto(target);
    }

    /** The merger. */
    public LoraMerger build() {
      checkArgument(!inputs.isEmpty(), "a merge needs at least one adapter");
      return new LoraMerger(this);
    }

    /** Shortcut for {@code build().merge()}. */
    public LoraAdapter merge() {
      return build().merge();
    }
  }
}

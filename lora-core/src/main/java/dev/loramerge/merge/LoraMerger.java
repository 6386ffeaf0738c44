package dev.loramerge.merge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.errorprone.annotations.CanIgnoreReturnValue;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.BlockWeights;
import dev.loramerge.internal.json.Recipes;
import dev.loramerge.internal.linalg.LazyManager;
import dev.loramerge.merge.spi.Offer.Precision;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
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
 * Builder#rank(int)}, are truncated by the exact factored SVD (the m×n update is never built); see
 * {@link RankPolicy}. The result's modules have α = rank (scale 1), as PEFT's merged adapters do.
 * A {@linkplain dev.loramerge.AdapterKind#REPLACEMENT replacement} is carried as it is, once,
 * when every input that has it (with a weight other than 0) has the same one, and refused when two
 * differ; neither the weights nor the block weights scale it.
 * To add the merged update to base weights instead, hand the merger to {@code
 * dev.loramerge.fuse.LoraFuser}.
 *
 * <p>Instances are immutable and thread-safe; {@link #merge()} may run concurrently. Each merge
 * runs on a pool of {@link Builder#threads(int)} threads of its own, shut down when it returns.
 * Each module is merged in its own NDManager, closed before the next, so memory stays at about
 * one module per worker thread; results are identical whatever the thread count. On a device
 * other than the CPU, for the methods with dense updates (the {@code *_svd} types, breadcrumbs,
 * della), a worker merges a run of same-shape modules in one manager instead and re-ranks their
 * dense updates in one batch (see {@link #BATCH_ELEMENTS}): a GPU pays tens of microseconds per
 * libtorch call and a wait per copy back, which a batch pays once.
 */
public final class LoraMerger {
  /** Metadata key under which the recipe JSON is stored. */
  public static final String RECIPE_KEY = "loramerge_recipe";

  /**
   * Elements of a device merge's run of same-shape modules (2²⁴, 64 MiB of float32 dense
   * updates): SDXL's 722 attention modules make 155 runs (from 40 of 640×640 to one 10240×1280),
   * enough to keep 16 host threads busy with the methods' dense work, each run's re-ranks one
   * batch on the device.
   */
  static final long BATCH_ELEMENTS = 1L << 24;

  private final ImmutableList<MergeInput> inputs;
  private final MergeAlgorithm algorithm;
  private final RankPolicy rankPolicy;
  private final Optional<PostPrune> prune;
  private final Device device;
  private final int threads;
  private final Optional<DType> dtype;
  private final MergeListener listener;
  private final String name;
  private final ImmutableMap<String, Object> recipeExtras;
  private final ModuleMerger modules;
  private final Encoding encoding;
  private final BaseWeights baseWeights;
  private final Optional<Boolean> batchReRanks;

  private LoraMerger(Builder builder) {
    this.inputs = ImmutableList.copyOf(builder.inputs);
    this.algorithm = builder.algorithm;
    this.rankPolicy = new RankPolicy(builder.rank, builder.convRank, builder.rankRule, builder.exactSvd, builder.svdClamp);
    this.prune = builder.prune;
    this.device = builder.device;
    this.threads = builder.threads;
    this.dtype = builder.dtype;
    this.listener = builder.listener;
    this.name = builder.name;
    this.recipeExtras = ImmutableMap.copyOf(builder.recipeExtras);
    this.baseWeights = builder.baseWeights;
    this.batchReRanks = builder.batchReRanks;
    this.modules = new ModuleMerger(inputs, algorithm, rankPolicy, baseWeights, device);
    this.encoding = new Encoding(prune);
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
    builder.rankPolicy(rankPolicy);
    builder.prune = prune;
    builder.device = device;
    builder.threads = threads;
    builder.dtype = dtype;
    builder.listener = listener;
    builder.name = name;
    builder.recipeExtras.putAll(recipeExtras);
    builder.baseWeights = baseWeights;
    builder.batchReRanks = batchReRanks;
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
    for (MergeInput input : inputs) {
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
    // The manager closes first: arrays made from the buffers go before the buffers are unpinned.
    try (DenseBuffers buffers = new DenseBuffers(device);
        LazyManager root = new LazyManager(() -> NDManager.newBaseManager(device))) {
      List<Future<List<Optional<LoraModule>>>> futures = new ArrayList<>();
      for (List<ModuleKey> chunk : chunks(keys)) {
        futures.add(
            pool.submit(
                () -> {
                  List<Optional<LoraModule>> modules = mergeModules(root, buffers, chunk, outputType);
                  for (ModuleKey key : chunk) {
                    listener.moduleMerged(done.incrementAndGet(), keys.size(), key);
                  }
                  return modules;
                }));
      }
      for (Future<List<Optional<LoraModule>>> future : futures) {
        future.get().forEach(module -> module.ifPresent(present -> merged.put(present.key(), present)));
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
    // The result keeps no input's metadata: where the inputs agree on an architecture their
    // shapes alone do not tell (small SDXL LoRAs that SD1.5 fits too), it is recorded, so the
    // result's kohya names and fuses follow it.
    Set<Optional<Architecture>> architectures =
        inputs.stream().map(input -> Architecture.detect(input.adapter())).collect(Collectors.toSet());
    Optional<Architecture> agreed = architectures.size() == 1 ? architectures.iterator().next() : Optional.empty();
    if (agreed.isPresent() && !Architecture.detect(result.build()).equals(agreed)) {
      result.putMetadata(Architecture.METADATA_KEY, agreed.get().id());
    }
    return result.build();
  }

  /**
   * The merged updates one module at a time in float64, as a fuse adds them; for fusers, and for
   * anything else that applies updates module by module.
   */
  public ModuleUpdates updates() {
    return new ModuleUpdates(modules, algorithm, encoding, device);
  }

  /** The adapters with their weights, in the order they were added. */
  public ImmutableList<MergeInput> inputs() {
    return inputs;
  }

  /** The merge method. */
  public MergeAlgorithm algorithm() {
    return algorithm;
  }

  /** How re-ranked modules get their rank. */
  public RankPolicy rankPolicy() {
    return rankPolicy;
  }

  /** Hears each merged module, and a fuse's progress. */
  public MergeListener listener() {
    return listener;
  }

  /** The recipe a merge records under {@link #RECIPE_KEY}, in the order of its JSON; unmodifiable. */
  public Map<String, Object> recipe() {
    return Recipe.of(algorithm, inputs, rankPolicy, prune, recipeExtras);
  }

  private DType commonInputType() {
    List<DType> types =
        inputs.stream()
            .flatMap(input -> input.adapter().modules().values().stream())
            .map(LoraModule::dtype)
            .distinct()
            .collect(Collectors.toList());
    // Merged factors are never float8 (see Builder.dtype), even where the inputs' are.
    return types.size() == 1 && types.get(0).byteSize() > 1 ? types.get(0) : DType.F32;
  }

  /**
   * The merge's units of work: a module each on the CPU; on a device, runs of modules of one
   * weight shape (in key order, up to {@link #BATCH_ELEMENTS} elements), whose dense updates are
   * re-ranked in one batch ({@link ModuleMerger#mergeTogether}).
   */
  private List<List<ModuleKey>> chunks(SortedSet<ModuleKey> keys) {
    if (!batching()) {
      return keys.stream().map(List::of).toList();
    }
    Map<List<Long>, List<ModuleKey>> byShape = new LinkedHashMap<>();
    for (ModuleKey key : keys) {
      long[] shape = inputs.stream()
          .flatMap(input -> input.adapter().module(key).stream())
          .findFirst().orElseThrow().weightShape();
      byShape.computeIfAbsent(Arrays.stream(shape).boxed().toList(), any -> new ArrayList<>()).add(key);
    }
    List<List<ModuleKey>> chunks = new ArrayList<>();
    for (Map.Entry<List<Long>, List<ModuleKey>> shape : byShape.entrySet()) {
      long elements = Math.max(1, shape.getKey().stream().reduce(1L, Math::multiplyExact));
      int size = (int) Math.max(1, Math.min(Integer.MAX_VALUE, BATCH_ELEMENTS / elements));
      List<ModuleKey> run = shape.getValue();
      for (int first = 0; first < run.size(); first += size) {
        chunks.add(List.copyOf(run.subList(first, Math.min(run.size(), first + size))));
      }
    }
    return chunks;
  }

  /**
   * Whether workers take runs of same-shape modules: on a device other than the CPU, for methods
   * whose updates are dense. A run of modules whose re-rank is the factored SVD (svd, and every
   * method without re-ranking) gains nothing from sharing a batch, and a worker taking a run of 40
   * of them while others finish leaves the threads unevenly loaded.
   */
  private boolean batching() {
    return batchReRanks.orElse(!Device.Type.CPU.equals(device.getDeviceType()) && algorithm.requirements().fullUpdates());
  }

  private List<Optional<LoraModule>> mergeModules(LazyManager root, DenseBuffers buffers, List<ModuleKey> keys, DType outputType) {
    List<Optional<LoraModule>> result = new ArrayList<>();
    List<ModuleKey> updates = new ArrayList<>();
    for (ModuleKey key : keys) {
      // A replacement is carried as it is: no method, rank, pruning or output type acts on it.
      Optional<LoraModule> replacement = modules.replacement(key);
      result.add(replacement);
      if (replacement.isEmpty()) {
        updates.add(key);
      }
    }
    try (LazyManager manager = new LazyManager(() -> root.get().newSubManager())) {
      List<Optional<Merged>> merged = batching()
          ? modules.mergeTogether(manager, buffers, updates, Precision.FLOAT32, Optional.of(outputType))
          : updates.stream().map(key -> modules.merge(manager, buffers, key, Precision.FLOAT32, Optional.of(outputType))).toList();
      int next = 0;
      for (int i = 0; i < keys.size(); i++) {
        if (result.get(i).isEmpty()) {
          ModuleKey key = keys.get(i);
          result.set(i, merged.get(next++).map(module -> encoding.toModule(key, modules.firstPresent(key), module, outputType)));
        }
      }
    }
    return result;
  }

  @Override
  public String toString() {
    return String.format(
        Locale.ROOT,
        "LoraMerger{inputs=%s, algorithm=%s, rank=%s, convRank=%s, rankRule=%s, exactSvd=%s, svdClamp=%s, prune=%s,"
            + " threads=%d, dtype=%s, device=%s}",
        inputs.stream().map(input -> input.adapter().name() + "=" + input.weight()).collect(Collectors.toList()),
        algorithm,
        rankPolicy.rank().map(String::valueOf).orElse("largest input"),
        rankPolicy.convRank().map(String::valueOf).orElse("rank"),
        rankPolicy.rule(),
        rankPolicy.exactSvd(),
        rankPolicy.svdClamp().map(String::valueOf).orElse("none"),
        prune.map(String::valueOf).orElse("none"),
        threads,
        dtype.map(DType::safetensorsName).orElse("inputs'"),
        device);
  }

  /** Collects adapters, weights and options; not thread-safe. */
  public static final class Builder {
    private final List<MergeInput> inputs = new ArrayList<>();
    private MergeAlgorithm algorithm = MergeAlgorithm.cat();
    private BaseWeights baseWeights = BaseWeights.none();
    private Optional<Integer> rank = Optional.empty();
    private Optional<Integer> convRank = Optional.empty();
    private boolean exactSvd;
    private RankRule rankRule = RankRule.fixed();
    private Optional<PostPrune> prune = Optional.empty();
    private Device device = Device.cpu();
    private int threads = Runtime.getRuntime().availableProcessors();
    private Optional<DType> dtype = Optional.empty();
    private MergeListener listener = MergeListener.NONE;
    private String name = "merged";
    private final java.util.Map<String, Object> recipeExtras = new java.util.LinkedHashMap<>();
    private Optional<Double> svdClamp = Optional.empty();
    private Optional<Boolean> batchReRanks = Optional.empty();

    private Builder() {}

    /**
     * Whether dense updates are re-ranked in batches of same-shape modules (default: on any
     * device but the CPU, for methods that read full updates); lets tests run the device's path
     * on the CPU.
     */
    @CanIgnoreReturnValue
    Builder batchReRanks(boolean batchReRanks) {
      this.batchReRanks = Optional.of(batchReRanks);
      return this;
    }

    /** Adds {@code adapter} with {@code weight} (any finite number; negative subtracts). */
    @CanIgnoreReturnValue
    public Builder add(LoraAdapter adapter, double weight) {
      return add(adapter, weight, BlockWeights.uniform());
    }

    /** Adds {@code adapter} with {@code weight}, each module further scaled by its block's weight. */
    @CanIgnoreReturnValue
    public Builder add(LoraAdapter adapter, double weight, BlockWeights blocks) {
      checkNotNull(adapter, "adapter");
      inputs.add(new MergeInput(adapter, weight, blocks));
      return this;
    }

    /**
     * The base model's weights, which a merge reads only to turn a DoRA module into a LoRA: its
     * update there is DoRA(W) − W for the base weight W (default: none, and a DoRA module is
     * refused).
     */
    @CanIgnoreReturnValue
    public Builder baseWeights(BaseWeights baseWeights) {
      this.baseWeights = checkNotNull(baseWeights, "baseWeights");
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
     * by an exact SVD instead of the randomized one (default false: the randomized SVD is within
     * 1 % of the optimal truncation and far faster).
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

    /**
     * The factors' element type (default: the inputs' common type, else F32). Float8 is refused:
     * its 3 (e4m3) or 2 (e5m2) mantissa bits in each factor would leave the update s·B·A a few
     * percent off, where a fuse into a float8 base rounds the exact fused weight once.
     */
    @CanIgnoreReturnValue
    public Builder dtype(DType dtype) {
      checkArgument(
          dtype == DType.F32 || dtype == DType.F16 || dtype == DType.BF16 || dtype == DType.F64,
          "merged factors can be F64, F32, F16 or BF16, got %s%s", dtype,
          dtype == DType.F8_E4M3 || dtype == DType.F8_E5M2
              ? " (a LoRA's factors are not written as float8: merge in F16 or BF16 and fuse into the float8 base)"
              : "");
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
     * The device the merge's native arithmetic runs on (default: the CPU, whatever devices DJL
     * sees): the large products of the dense methods ({@code *_svd}, breadcrumbs, della, dynamic
     * rank) and everything else the merge hands to libtorch. Every array the merge makes lives
     * there; the merged factors come back to host memory either way. The factor-space methods
     * compute in Java and do not use it.
     */
    @CanIgnoreReturnValue
    public Builder device(Device device) {
      this.device = checkNotNull(device, "device");
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

    /** Sets every rank option at once (see {@link RankPolicy}). */
    @CanIgnoreReturnValue
    public Builder rankPolicy(RankPolicy policy) {
      checkNotNull(policy, "policy");
      this.rank = policy.rank();
      this.convRank = policy.convRank();
      this.rankRule = policy.rule();
      this.exactSvd = policy.exactSvd();
      this.svdClamp = policy.svdClamp();
      return this;
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

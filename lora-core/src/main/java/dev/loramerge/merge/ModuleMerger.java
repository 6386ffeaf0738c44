package dev.loramerge.merge;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import com.google.common.collect.ImmutableList;
import dev.loramerge.AdapterKind;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.internal.fuse.TaskKernels;
import dev.loramerge.internal.linalg.OrderedProducts;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.Offer;
import dev.loramerge.merge.spi.Offer.Precision;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.function.Supplier;
import java.util.stream.Collectors;

/**
 * Merges one module of a merger's inputs: checks that they fit, hands them to the algorithm, and
 * brings its update to the target rank. Immutable and thread-safe.
 */
final class ModuleMerger {
  private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(ModuleMerger.class);
  /** Relative errors of re-ranked materialised updates above this are logged. */
  private static final double REPORTED_ERROR = 1e-4;

  private final ImmutableList<MergeInput> inputs;
  private final MergeAlgorithm algorithm;
  private final RankPolicy policy;
  private final ReRank reRank;
  private final BaseWeights baseWeights;
  /**
   * Where the merge runs (its managers' device, known without starting the engine): on the CPU
   * with the Vector API, dense updates are re-ranked on the host with {@link OrderedProducts},
   * without libtorch; on a GPU with the kernels, task arithmetic runs there.
   */
  private final Device device;

  ModuleMerger(ImmutableList<MergeInput> inputs, MergeAlgorithm algorithm, RankPolicy policy, BaseWeights baseWeights, Device device) {
    this.baseWeights = baseWeights;
    this.device = device;
    this.inputs = inputs;
    this.algorithm = algorithm;
    this.policy = policy;
    this.reRank = new ReRank(policy);
  }

  /**
   * The merged update of {@code key} as factors {up (m×r), down (r×in·k·k)} with scale 1, owned
   * by {@code manager}, before rounding to an output type; empty when no input has the module.
   * The manager is asked for only when arrays are made, so that merges the algorithm does on
   * values never start the engine (about half a second).
   * {@code precision} is the precision the update is carried on in; {@code outputType} is the type
   * a merge writes (empty in a fuse), which an algorithm may encode its factors straight into
   * when nothing is done to them after it.
   */
  Optional<Merged> merge(
      Supplier<NDManager> manager, DenseBuffers buffers, ModuleKey key, Precision precision, Optional<DType> outputType) {
    return step(manager, buffers, key, precision, outputType, false).merged();
  }

  /**
   * {@link #merge} of each of {@code keys}, in order, with the dense updates that the randomized
   * SVD re-ranks truncated together, one batch per shape and target rank: on a device a batch
   * costs the calls and waits of one module. Where the CUDA kernels run on the device, a method
   * that is {@link MergeAlgorithm#taskArithmetic() task arithmetic} has the batch's updates made
   * there from its LoRA inputs' factors ({@link DeviceTasks}), with the bits of its own merge. The batches are a function of the keys alone, so
   * the results do not depend on threads or timing.
   */
  List<Optional<Merged>> mergeTogether(
      Supplier<NDManager> manager, DenseBuffers buffers, List<ModuleKey> keys, Precision precision,
      Optional<DType> outputType) {
    List<Step> steps = new ArrayList<>();
    for (ModuleKey key : keys) {
      steps.add(step(manager, buffers, key, precision, outputType, true));
    }
    Map<List<Integer>, List<Integer>> batches = new LinkedHashMap<>();
    for (int i = 0; i < steps.size(); i++) {
      Step step = steps.get(i);
      if (step.deferred()) {
        batches.computeIfAbsent(List.of(step.rows(), step.columns(), step.target(), step.onDevice() != null ? 1 : 0), shape -> new ArrayList<>())
            .add(i);
      }
    }
    List<Optional<Merged>> merged = new ArrayList<>(steps.stream().map(Step::merged).toList());
    for (Map.Entry<List<Integer>, List<Integer>> batch : batches.entrySet()) {
      int rows = batch.getKey().get(0);
      int target = batch.getKey().get(2);
      List<Step> members = batch.getValue().stream().map(steps::get).toList();
      double[][][] factors = reRankBatch(manager, buffers, members, rows, batch.getKey().get(1), target);
      for (int j = 0; j < members.size(); j++) {
        merged.set(batch.getValue().get(j), Optional.of(Merged.ofDoubles(factors[j], rows)));
      }
    }
    return merged;
  }

  /**
   * The re-ranked factors of a batch of deferred steps of one shape and target: made on the device
   * by the method's task arithmetic where the steps were deferred for that, and the kernels can
   * address the arrays; else from the dense updates the method gives on the host.
   */
  private double[][][] reRankBatch(Supplier<NDManager> manager, DenseBuffers buffers, List<Step> members, int rows, int cols, int target) {
    if (members.get(0).onDevice() != null) {
      try (NDManager scope = manager.get().newSubManager()) {
        List<MergeContext> contexts = members.stream().map(Step::onDevice).toList();
        Optional<NDArray> dense = DeviceTasks.merged(scope, buffers, algorithm.taskArithmetic().orElseThrow(), contexts, rows, cols);
        if (dense.isPresent()) {
          return reRank.denseBatch(dense.get(), target);
        }
      }
    }
    ByteBuffer buffer = buffers.take(Math.multiplyExact(Math.multiplyExact(members.size(), rows * cols), Float.BYTES));
    try {
      ByteBuffer stacked = buffer.duplicate().clear().limit(members.size() * rows * cols * Float.BYTES).slice().order(ByteOrder.nativeOrder());
      FloatBuffer floats = stacked.asFloatBuffer();
      for (Step member : members) {
        floats.put(member.denseValues(algorithm));
      }
      return reRank.denseBatch(manager.get(), stacked, members.size(), rows, cols, target);
    } finally {
      buffers.give(buffer);
    }
  }

  /**
   * A module's merge up to its re-rank: the merged update; or, with {@code deferDense}, a dense
   * update that the randomized SVD re-ranks, or the module's merge left for the device's task
   * arithmetic ({@code onDevice}), with its shape and target rank, for {@link #mergeTogether}.
   */
  private record Step(Optional<Merged> merged, ModuleUpdate.Dense dense, MergeContext onDevice, int rows, int columns, int target) {
    static Step of(Optional<Merged> merged) {
      return new Step(merged, null, null, 0, 0, 0);
    }

    static Step of(ModuleUpdate.Dense dense, int target) {
      return new Step(Optional.empty(), dense, null, dense.rows(), dense.columns(), target);
    }

    boolean deferred() {
      return dense != null || onDevice != null;
    }

    /** The dense update, merged on the host by {@code algorithm} where it was left for the device. */
    float[] denseValues(MergeAlgorithm algorithm) {
      return dense != null ? dense.values() : ((ModuleUpdate.Dense) algorithm.merge(onDevice)).values();
    }
  }

  private Step step(
      Supplier<NDManager> manager, DenseBuffers buffers, ModuleKey key, Precision precision, Optional<DType> outputType,
      boolean deferDense) {
    List<Integer> indices = presentIndices(key);
    List<MergeInput> present = indices.stream().map(inputs::get).toList();
    if (present.isEmpty()) {
      return Step.of(Optional.empty());
    }
    LoraModule first = present.get(0).adapter().modules().get(key);
    MergeAlgorithm.Requirements requirements = algorithm.requirements();
    boolean materialise = present.stream().anyMatch(input -> !input.adapter().modules().get(key).isPlainLora());
    if (materialise && requirements.exactInFloat64()) {
      return Step.of(Optional.of(materialised(manager, key, present)));
    }
    if (materialise) {
      checkMaterialisable(key, present);
    } else {
      checkShapes(key, present);
      if (requirements.equalRanks()) {
        checkEqualRanks(key, present);
      }
    }
    ImmutableList.Builder<ModuleInput> moduleInputs = ImmutableList.builder();
    for (int i = 0; i < present.size(); i++) {
      MergeInput input = present.get(i);
      LoraModule module = input.adapter().modules().get(key);
      moduleInputs.add(
          module.isPlainLora()
              ? new ModuleFactors(indices.get(i), module, input.weight(key), manager, precision)
              : materialisedInput(indices.get(i), key, input, module));
    }
    ImmutableList<ModuleInput> built = moduleInputs.build();
    // A materialised update's rank is its kind's bound (r₁·r₂ for LoHa), as for cat and svd.
    int largestRank = built.stream()
        .mapToInt(input -> input.module().isPlainLora() ? input.module().rank() : input.module().updateRankBound())
        .max().orElseThrow();
    Optional<Integer> explicit = policy.explicitRank(first.kind());
    int target = explicit.orElse(largestRank);
    // An algorithm that does not re-rank gives at most the inputs' ranks together, so with no
    // explicit rank below that its factors are written as they are, and may come encoded.
    int rankSum = built.stream().mapToInt(input -> input.module().rank()).sum();
    Optional<DType> finalType =
        outputType.filter(type -> !requirements.reRanked() && (explicit.isEmpty() || rankSum <= target));
    MergeContext context = new MergeContext(key, built, manager, target, new Offer(precision, finalType));
    int rows = Math.toIntExact(first.outFeatures());
    int columns = Math.toIntExact(TensorData.numel(first.weightShape()) / first.outFeatures());
    Optional<TaskArithmetic> arithmetic = algorithm.taskArithmetic();
    if (deferDense && !materialise && precision == Precision.FLOAT32 && arithmetic.isPresent()
        && reRank.randomized(rows, columns) && TaskKernels.available(device, arithmetic.get(), columns)) {
      return new Step(Optional.empty(), null, context, rows, columns, target);
    }
    ModuleUpdate update = algorithm.merge(context);
    if (update instanceof ModuleUpdate.Encoded encoded) {
      return Step.of(Optional.of(Merged.ofTensors(checkEncoded(key, encoded, finalType, rankSum))));
    }
    if (update instanceof ModuleUpdate.Dense dense && deferDense && reRank.randomized(dense.rows(), dense.columns())) {
      return Step.of(dense, target);
    }
    if (update instanceof ModuleUpdate.Dense dense && Device.Type.CPU.equals(device.getDeviceType()) && OrderedProducts.vectorized()) {
      return Step.of(Optional.of(Merged.ofDoubles(reRank.dense(dense.values(), dense.rows(), dense.columns(), target), dense.rows())));
    }
    if (update instanceof ModuleUpdate.Dense dense) {
      ByteBuffer buffer = buffers.take(Math.multiplyExact(dense.values().length, Float.BYTES));
      NDArray array =
          manager.get().create(DenseBuffers.holding(buffer, dense.values()), new Shape(dense.rows(), dense.columns()), DataType.FLOAT32);
      try {
        return Step.of(Optional.of(Merged.of(reRank.dense(manager.get(), array, target))));
      } finally {
        array.close();
        buffers.give(buffer);
      }
    }
    Merged merged = update instanceof ModuleUpdate.Factors factors
        ? Merged.ofFloats(factors.up(), factors.down(), factors.rank())
        : Merged.ofDoubles((ModuleUpdate.DoubleFactors) update);
    if (requirements.reRanked() || (explicit.isPresent() && merged.rank() > target)) {
      return Step.of(Optional.of(reRank.factored(merged, target, Math.toIntExact(first.outFeatures()))));
    }
    return Step.of(Optional.of(merged));
  }

  /**
   * A module some input has in a kind without LoRA factors, merged as the exact weighted sum of
   * the inputs' full updates Σ wᵢ·ΔWᵢ (built in float64, one module at a time) and re-ranked by
   * SVD to the explicit rank, or by default to the sum of the updates' rank bounds, which keeps it
   * exact up to float32. This is the merge of the methods that are the exact weighted sum ({@code
   * cat}, {@code svd}); methods on full updates get each update as a {@link MaterialisedInput}
   * instead. A DoRA module needs the base weights, and a bias difference cannot become a LoRA.
   */
  private Merged materialised(Supplier<NDManager> manager, ModuleKey key, List<MergeInput> present) {
    checkMaterialisable(key, present);
    LoraModule first = present.get(0).adapter().modules().get(key);
    int out = Math.toIntExact(first.outFeatures());
    int inner = Math.toIntExact(TensorData.numel(first.weightShape()) / out);
    double[] sum = new double[Math.multiplyExact(out, inner)];
    long bound = 0;
    for (MergeInput input : present) {
      LoraModule module = input.adapter().modules().get(key);
      double w = input.weight(key);
      if (module.magnitude().isPresent()) {
        double[] update = doraUpdate(key, module, w);
        for (int i = 0; i < sum.length; i++) {
          sum[i] += update[i];
        }
      } else {
        double[] delta = module.deltaF64();
        for (int i = 0; i < sum.length; i++) {
          sum[i] += w * delta[i];
        }
      }
      bound += module.updateRankBound();
    }
    int target = policy.explicitRank(first.kind()).orElse((int) Math.min(bound, Math.min(out, inner)));
    try (NDArray exact = manager.get().create(sum, new Shape(out, inner));
        NDArray array = exact.toType(DataType.FLOAT32, false)) {
      NDArray[] factors = reRank.dense(manager.get(), array, target);
      reportError(key, exact, factors);
      return Merged.of(factors);
    }
  }

  /**
   * Checks that every input's module {@code key} can be materialised for this merge: a DoRA module
   * only with the base weights, no bias difference, a kind without LoRA factors only for a method
   * that is the exact weighted sum or reads full updates, and the same weight size in every input.
   *
   * @throws LoraMergeException naming the module, the adapter and its kind
   */
  private void checkMaterialisable(ModuleKey key, List<MergeInput> present) {
    LoraModule first = present.get(0).adapter().modules().get(key);
    long size = TensorData.numel(first.weightShape());
    MergeAlgorithm.Requirements requirements = algorithm.requirements();
    for (MergeInput input : present) {
      LoraModule module = input.adapter().modules().get(key);
      String refusal = null;
      if (module.magnitude().isPresent() && baseWeights.weight(key).isEmpty()) {
        refusal = "DoRA renormalises W + ΔW, so it becomes a LoRA only with the base weights (--base,"
            + " LoraMerger.Builder.baseWeights); or fuse it into the base instead";
      } else if (module.biasDiff().isPresent()) {
        refusal = "a LoRA cannot hold its bias difference; fuse it, or convert it to the kohya layout";
      } else if (!module.isPlainLora() && !requirements.exactInFloat64() && !requirements.fullUpdates()) {
        refusal = algorithm.name() + " works on LoRA factors, whose product is not this module's update; "
            + algorithm.onFullUpdates()
                .map(variant -> "use " + variant.name() + ", the same method on the full updates")
                .orElse("cat and svd merge it as the exact weighted sum of the full updates, and the methods on"
                    + " full updates (the *_svd ones, breadcrumbs, della) prune it");
      }
      if (refusal != null) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "cannot merge module '%s' of adapter '%s', a %s: %s", key, input.adapter().name(),
                module.kindName(), refusal));
      }
      if (module.outFeatures() != first.outFeatures() || TensorData.numel(module.weightShape()) != size) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' updates %s in adapter '%s' but %s in adapter '%s'; the adapters are for"
                    + " different models", key, Arrays.toString(first.weightShape()), present.get(0).adapter().name(),
                Arrays.toString(module.weightShape()), input.adapter().name()));
      }
    }
  }

  /**
   * A module without LoRA factors as a method on full updates reads it: its ΔW weighted by the
   * input's weight, or a DoRA module's DoRA(W) − W on the base weights, which has its weight inside
   * the norm (as {@link #materialised} and a fuse take it) and so is weighted 1.
   */
  private ModuleInput materialisedInput(int index, ModuleKey key, MergeInput input, LoraModule module) {
    double w = input.weight(key);
    return module.magnitude().isPresent()
        ? new MaterialisedInput(index, module, 1, () -> doraUpdate(key, module, w))
        : new MaterialisedInput(index, module, w, module::deltaF64);
  }

  /** DoRA's update on the base weights, DoRA(W) − W, with {@code w} inside the norm as a fuse computes it. */
  private double[] doraUpdate(ModuleKey key, LoraModule module, double w) {
    TensorData base = baseWeights.weight(key).orElseThrow();
    if (base.numel() != TensorData.numel(module.weightShape())) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "module '%s' updates %s but its base weight is %s", key,
              Arrays.toString(module.weightShape()), Arrays.toString(base.shape())));
    }
    double[] weight = base.toDoubleArray();
    double[] update = module.fusedF64(weight, w);
    for (int i = 0; i < update.length; i++) {
      update[i] -= weight[i];
    }
    return update;
  }

  /**
   * Logs how far a re-ranked materialised update is from the exact one when it is further than
   * float32 rounding: a rank below the update's (a DoRA module, which also rescales W, is
   * re-ranked to its LoRA's rank by default).
   */
  private static void reportError(ModuleKey key, NDArray exact, NDArray[] factors) {
    double norm = exact.norm().getDouble();
    double error = factors[0].toType(DataType.FLOAT64, false).matMul(factors[1].toType(DataType.FLOAT64, false))
        .sub(exact).norm().getDouble();
    double relative = norm == 0 ? 0 : error / norm;
    if (relative > REPORTED_ERROR) {
      log.warn(String.format(
          Locale.ROOT, "module '%s': the rank-%d LoRA is %.3g (relative) from the exact update", key,
          factors[0].getShape().get(1), relative));
    }
  }

  /**
   * The replacement a merge carries for {@code key} as it is, when an input with a weight other
   * than 0 has the module as a {@link AdapterKind#REPLACEMENT}; empty otherwise.
   *
   * @throws LoraMergeException as {@link #replacement(ModuleKey, List)} does
   */
  Optional<LoraModule> replacement(ModuleKey key) {
    return replacement(key, presentIndices(key).stream().map(inputs::get).toList());
  }

  /**
   * The replacement of {@code key} among the inputs {@code present}, if any: every input must have
   * it as a replacement, and all of them the same one (shape and values), which is carried once.
   * A replacement is all or nothing, so two different ones are never averaged.
   *
   * @throws LoraMergeException when an input has the module as an update, or two replacements differ
   */
  static Optional<LoraModule> replacement(ModuleKey key, List<MergeInput> present) {
    MergeInput first = present.stream()
        .filter(input -> input.adapter().modules().get(key).adapterKind() == AdapterKind.REPLACEMENT)
        .findFirst().orElse(null);
    if (first == null) {
      return Optional.empty();
    }
    LoraModule replacement = first.adapter().modules().get(key);
    double[] values = null;
    for (MergeInput input : present) {
      LoraModule module = input.adapter().modules().get(key);
      if (module.adapterKind() != AdapterKind.REPLACEMENT) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' is a replacement in adapter '%s' but a %s in adapter '%s'; a replacement takes"
                    + " the base weight's place and cannot be combined with an update", key, first.adapter().name(),
                module.kindName(), input.adapter().name()));
      }
      if (input == first) {
        continue;
      }
      values = values == null ? replacement.replacementWeight().toDoubleArray() : values;
      if (!Arrays.equals(module.weightShape(), replacement.weightShape())
          || !Arrays.equals(module.replacementWeight().toDoubleArray(), values)) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' is replaced by different tensors in adapters '%s' and '%s'; a replacement is all"
                    + " or nothing and is never averaged: take one of the adapters, or give the other weight 0", key,
                first.adapter().name(), input.adapter().name()));
      }
    }
    return Optional.of(replacement);
  }

  /** The module of {@code key} of the first input that has it with a weight other than 0. */
  LoraModule firstPresent(ModuleKey key) {
    return inputs.stream()
        .filter(input -> input.weight(key) != 0)
        .flatMap(input -> input.adapter().module(key).stream())
        .findFirst()
        .orElseThrow();
  }

  /** The inputs that have a module for {@code key} and a weight other than 0 on it, in order. */
  List<MergeInput> present(ModuleKey key) {
    List<MergeInput> present = presentIndices(key).stream().map(inputs::get).toList();
    checkShapes(key, present);
    return present;
  }

  /** The inputs. */
  ImmutableList<MergeInput> inputs() {
    return inputs;
  }

  /** The rank policy. */
  RankPolicy policy() {
    return policy;
  }

  /** {up, down} of an encoded update, checked against what the merge offered. */
  private TensorData[] checkEncoded(ModuleKey key, ModuleUpdate.Encoded update, Optional<DType> offered, int rankSum) {
    TensorData up = update.up();
    TensorData down = update.down();
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

  private List<Integer> presentIndices(ModuleKey key) {
    List<Integer> indices = new ArrayList<>();
    for (int i = 0; i < inputs.size(); i++) {
      MergeInput input = inputs.get(i);
      if (input.weight(key) != 0 && input.adapter().modules().containsKey(key)) {
        indices.add(i);
      }
    }
    return indices;
  }

  private static void checkShapes(ModuleKey key, List<MergeInput> present) {
    LoraModule first = present.get(0).adapter().modules().get(key);
    for (MergeInput input : present) {
      LoraModule module = input.adapter().modules().get(key);
      if (!Arrays.equals(module.weightShape(), first.weightShape())) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "module '%s' updates %s in adapter '%s' but %s in adapter '%s'; the adapters are"
                    + " for different models",
                key,
                Arrays.toString(first.weightShape()),
                present.get(0).adapter().name(),
                Arrays.toString(module.weightShape()),
                input.adapter().name()));
      }
    }
  }

  private void checkEqualRanks(ModuleKey key, List<MergeInput> present) {
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
}

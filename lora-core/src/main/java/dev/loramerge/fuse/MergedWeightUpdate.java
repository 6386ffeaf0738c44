package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSet;
import dev.loramerge.DType;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.internal.fuse.DenseFusion;
import dev.loramerge.internal.fuse.FuseScratch;
import dev.loramerge.internal.fuse.DeviceFusion;
import dev.loramerge.internal.fuse.FactorCache;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.internal.linalg.LazyManager;
import dev.loramerge.merge.Float64Factors;
import dev.loramerge.merge.MergeListener;
import dev.loramerge.merge.ModuleUpdates;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;

/**
 * A merger's update of the matched modules, times a factor, computed per weight on demand on the
 * fuser's workers: plain LoRA modules from their merged factors, the other kinds (and DoRA, and
 * bias differences) from their materialised updates, one weight at a time.
 */
final class MergedWeightUpdate implements DeviceUpdate {
  private final ModuleUpdates updates;
  private final MergeListener listener;
  private final ImmutableMap<String, ModuleKey> modules;
  private final ImmutableMap<String, ModuleKey> biases;
  private final double factor;
  private final String recipe;
  private final ForkJoinPool workers;
  private final FuseScratch scratch;
  private final ImmutableMap<String, FusedModule> fused;
  private final ImmutableMap<String, FusedModule> fusedBiases;
  private final ImmutableSet<ModuleKey> matched;
  private final ImmutableSet<String> transposed;
  /** The input features of each weight this update widens, by name. */
  private final ImmutableMap<String, Long> widened;
  private final DoraMagnitude.Weighting doraWeighting;

  MergedWeightUpdate(
      ModuleUpdates updates, MergeListener listener, ImmutableMap<String, ModuleKey> modules,
      ImmutableMap<String, ModuleKey> biases, double factor, DoraMagnitude.Weighting doraWeighting, String recipe,
      ForkJoinPool workers, FuseScratch scratch) {
    this.doraWeighting = doraWeighting;
    this.biases = biases;
    this.workers = workers;
    this.scratch = scratch;
    this.updates = updates;
    this.listener = listener;
    this.modules = modules;
    this.factor = factor;
    this.recipe = recipe;
    this.fused = ImmutableMap.of();
    this.fusedBiases = ImmutableMap.of();
    this.matched = ImmutableSet.of();
    this.transposed = ImmutableSet.of();
    this.widened = ImmutableMap.of();
  }

  private MergedWeightUpdate(
      MergedWeightUpdate update, ImmutableMap<String, FusedModule> fused, ImmutableMap<String, FusedModule> fusedBiases,
      ImmutableSet<ModuleKey> matched, ImmutableSet<String> transposed, ImmutableMap<String, Long> widened) {
    this.doraWeighting = update.doraWeighting;
    this.biases = update.biases;
    this.workers = update.workers;
    this.scratch = update.scratch;
    this.updates = update.updates;
    this.listener = update.listener;
    this.modules = update.modules;
    this.factor = update.factor;
    this.recipe = update.recipe;
    this.fused = fused;
    this.fusedBiases = fusedBiases;
    this.matched = matched;
    this.transposed = transposed;
    this.widened = widened;
  }

  /**
   * This update, also rewriting the fused weights {@code fused} and the fused biases {@code
   * fusedBiases} (by tensor name) with the rows of those of their parts that are {@code matched}.
   */
  MergedWeightUpdate withFused(
      ImmutableMap<String, FusedModule> fused, ImmutableMap<String, FusedModule> fusedBiases, Set<ModuleKey> matched) {
    return new MergedWeightUpdate(this, fused, fusedBiases, ImmutableSet.copyOf(matched), transposed, widened);
  }

  /**
   * This update, with the weights named {@code transposed} held transposed ([in, out]) in the
   * target: each is transposed to its module's [out, in], fused as a weight of that name would
   * be, and transposed back, so its bytes are the separate weight's, transposed.
   */
  MergedWeightUpdate withTransposed(ImmutableSet<String> transposed) {
    return new MergedWeightUpdate(this, fused, fusedBiases, matched, transposed, widened);
  }

  /**
   * This update, widening the weights of {@code widened}: each is fused as [W | 0], the base
   * weight followed by zero columns up to the module's input features (diffusers' {@code
   * _maybe_expand_transformer_param_shape_or_error_} widens it so before the LoRA applies), so
   * that every value is the exact sum rounded once, and a new column's is the update's alone.
   */
  MergedWeightUpdate withWidened(List<FuseReport.Widened> widened) {
    ImmutableMap.Builder<String, Long> features = ImmutableMap.builder();
    widened.forEach(w -> features.put(w.weight(), w.toFeatures()));
    return new MergedWeightUpdate(this, fused, fusedBiases, matched, transposed, features.build());
  }

  @Override
  public long[] outputShape(TensorSpec spec) {
    Long features = widened.get(spec.name());
    return features == null ? spec.shape() : new long[] {spec.shape()[0], features};
  }

  @Override
  public ImmutableSet<String> names() {
    return ImmutableSet.<String>builder()
        .addAll(modules.keySet()).addAll(biases.keySet()).addAll(fused.keySet()).addAll(fusedBiases.keySet()).build();
  }

  @Override
  public void apply(TensorSpec spec, ByteBuffer weight, ByteBuffer into, DType dtype) {
    Long features = widened.get(spec.name());
    if (features != null) {
      long[] shape = spec.shape();
      applyUpright(new TensorSpec(spec.name(), spec.dtype(), new long[] {shape[0], features}),
          widen(weight.duplicate(), shape[0], shape[1], features, spec.dtype().byteSize()), into, dtype);
      return;
    }
    if (transposed.contains(spec.name())) {
      long[] shape = spec.shape();
      TensorSpec upright = new TensorSpec(spec.name(), spec.dtype(), new long[] {shape[1], shape[0]});
      ByteBuffer uprightWeight = transpose(weight.duplicate(), shape[0], shape[1], spec.dtype().byteSize());
      ByteBuffer fusedUpright = ByteBuffer.allocate(uprightWeight.capacity() / spec.dtype().byteSize() * dtype.byteSize())
          .order(ByteOrder.LITTLE_ENDIAN);
      applyUpright(upright, uprightWeight, fusedUpright, dtype);
      into.duplicate().put(transpose(fusedUpright.clear(), shape[1], shape[0], dtype.byteSize()));
      return;
    }
    applyUpright(spec, weight, into, dtype);
  }

  /**
   * The {@code rows}×{@code columns} elements of {@code bytes} followed, in each row, by zeros up
   * to {@code width} columns, in a new buffer: all-zero bytes are +0 in every floating-point type.
   */
  private static ByteBuffer widen(ByteBuffer bytes, long rows, long columns, long width, int elementBytes) {
    int from = Math.toIntExact(columns * elementBytes);
    int to = Math.toIntExact(width * elementBytes);
    ByteBuffer result = ByteBuffer.allocate(Math.toIntExact(rows * to)).order(ByteOrder.LITTLE_ENDIAN);
    for (long row = 0; row < rows; row++) {
      result.put(Math.toIntExact(row * to), bytes, Math.toIntExact(bytes.position() + row * from), from);
    }
    return result;
  }

  /** The {@code rows}×{@code columns} elements of {@code bytes}, transposed, in a new buffer. */
  private static ByteBuffer transpose(ByteBuffer bytes, long rows, long columns, long elementBytes) {
    int size = Math.toIntExact(elementBytes);
    ByteBuffer result = ByteBuffer.allocate(Math.toIntExact(rows * columns * size)).order(ByteOrder.LITTLE_ENDIAN);
    int start = bytes.position();
    for (long row = 0; row < rows; row++) {
      for (long column = 0; column < columns; column++) {
        int from = Math.toIntExact(start + (row * columns + column) * size);
        int to = Math.toIntExact((column * rows + row) * size);
        for (int b = 0; b < size; b++) {
          result.put(to + b, bytes.get(from + b));
        }
      }
    }
    return result;
  }

  private void applyUpright(TensorSpec spec, ByteBuffer weight, ByteBuffer into, DType dtype) {
    String name = spec.name();
    ModuleKey biasOf = biases.get(name);
    if (biasOf != null) {
      String label = String.format(Locale.ROOT, "module '%s' (bias '%s')", biasOf, name);
      run(() -> DenseFusion.fuse(weight, spec.dtype(), values -> updates.fusedBiasF64(biasOf, values, factor), into, dtype, label));
      return;
    }
    FusedModule fusedBias = fusedBiases.get(name);
    if (fusedBias != null) {
      String label = String.format(Locale.ROOT, "fused bias '%s' (%s)", name, fusedBias.originalPath());
      run(() -> DenseFusion.fuse(weight, spec.dtype(), values -> byParts(fusedBias, values, 1,
          (key, part) -> updates.hasBiasDiff(key) ? updates.fusedBiasF64(key, part, factor) : part), into, dtype, label));
      return;
    }
    if (materialised(spec)) {
      ModuleKey key = modules.get(name);
      String label = label(spec.name());
      run(() -> DenseFusion.fuse(weight, spec.dtype(), values -> updates.fusedF64(key, values, factor, doraWeighting), into, dtype, label));
      return;
    }
    FusedModule fusedModule = fused.get(name);
    if (fusedModule != null && fusedModule.keys().stream().anyMatch(key -> matched.contains(key) && updates.materialised(key))) {
      // A part with a bias difference: every matched part's rows as the separate weight's are fused.
      String label = String.format(Locale.ROOT, "fused weight '%s' (%s)", name, fusedModule.originalPath());
      run(() -> DenseFusion.fuse(weight, spec.dtype(), values -> byParts(fusedModule, values, fusedModule.inFeatures(),
          (key, part) -> matched.contains(key) ? updates.fusedF64(key, part, factor, doraWeighting) : part), into, dtype,
          label));
      return;
    }
    if (fusedModule != null) {
      String label = String.format(Locale.ROOT, "fused weight '%s' (%s)", name, fusedModule.originalPath());
      run(() -> fuseByRows(fusedModule, spec, weight, into, dtype, label));
      return;
    }
    String label = label(spec.name());
    Float64Factors factors = scaledFactors(spec);
    run(() -> {
      try (LazyManager manager = new LazyManager(() -> NDManager.newBaseManager(Device.cpu()))) {
        Fusion.fuse(scratch, manager, weight, spec.dtype(), spec.shape(), factors.up(), factors.down(), factors.rank(), into,
            dtype, label);
      }
    });
  }

  /**
   * A fused weight, segment by segment: each matched part's rows with the part's own factors (its
   * rows of them), by the kernel and with the values a fuse into the separate weight uses, so that
   * every row gets that weight's bytes; an unmatched part's rows with a zero update (converted
   * like the rest when the output's dtype differs).
   */
  private void fuseByRows(FusedModule module, TensorSpec spec, ByteBuffer weight, ByteBuffer into, DType dtype, String label) {
    Map<ModuleKey, Float64Factors> factors = new LinkedHashMap<>();
    for (ModuleKey part : module.keys()) {
      if (matched.contains(part)) {
        factors.put(part, updates.factors(part));
      }
    }
    int in = Math.toIntExact(module.inFeatures());
    long[] starts = module.fusedRows();
    try (LazyManager manager = new LazyManager(() -> NDManager.newBaseManager(Device.cpu()))) {
      for (int i = 0; i < module.segments().size(); i++) {
        FusedModule.Segment segment = module.segments().get(i);
        int rows = Math.toIntExact(segment.rows());
        Float64Factors part = factors.get(segment.key());
        int rank = part == null ? 1 : part.rank();
        double[] up = new double[rows * rank];
        double[] down = part == null ? new double[in] : part.down();
        if (part != null) {
          System.arraycopy(part.up(), Math.toIntExact(segment.moduleRow() * rank), up, 0, up.length);
          for (int j = 0; j < up.length; j++) {
            up[j] *= factor;
          }
        }
        Fusion.fuse(scratch, manager, rows(weight, starts[i], rows, (long) in * spec.dtype().byteSize()), spec.dtype(),
            new long[] {rows, in}, up, down, rank, rows(into, starts[i], rows, (long) in * dtype.byteSize()), dtype, label);
      }
    }
  }

  /** Rows {@code [first, first + count)} of a row-major tensor's bytes, {@code rowBytes} each. */
  private static ByteBuffer rows(ByteBuffer tensor, long first, int count, long rowBytes) {
    int from = Math.toIntExact(tensor.position() + first * rowBytes);
    return tensor.duplicate().limit(Math.toIntExact(from + count * rowBytes)).position(from).slice().order(tensor.order());
  }

  private void run(Runnable kernel) {
    // Targets may call from threads of their own (a file target's reader); the kernel's parallel
    // blocks run on the workers either way. An in-memory target replaying this update to undo
    // another fuse may call once this fuse's workers are shut down: then the common pool runs it.
    if (ForkJoinTask.getPool() == workers) {
      kernel.run();
      return;
    }
    DeviceFusion.submitted(workers, ForkJoinTask.adapt(kernel)).join();
  }

  /**
   * Materialised updates (other adapter kinds, DoRA, bias differences), fused weights (whose
   * parts' factors are joined) and transposed weights are computed on the host.
   */
  @Override
  public boolean onDevice(TensorSpec spec) {
    return !materialised(spec) && !fused.containsKey(spec.name()) && !transposed.contains(spec.name())
        && !widened.containsKey(spec.name());
  }

  private boolean materialised(TensorSpec spec) {
    ModuleKey key = modules.get(spec.name());
    return biases.containsKey(spec.name()) || fusedBiases.containsKey(spec.name()) || (key != null && updates.materialised(key));
  }

  /**
   * {@code values} (a fused tensor, row-major with {@code columns} per row) with each part's rows
   * gathered from its segments, replaced by {@code fuse} of them, and put back in their place.
   */
  private static double[] byParts(
      FusedModule module, double[] values, long columns, java.util.function.BiFunction<ModuleKey, double[], double[]> fuse) {
    long[] starts = module.fusedRows();
    for (ModuleKey key : module.keys()) {
      double[] part = new double[Math.toIntExact(module.moduleRows(key) * columns)];
      for (int i = 0; i < module.segments().size(); i++) {
        FusedModule.Segment segment = module.segments().get(i);
        if (segment.key().equals(key)) {
          System.arraycopy(values, Math.toIntExact(starts[i] * columns), part, Math.toIntExact(segment.moduleRow() * columns),
              Math.toIntExact(segment.rows() * columns));
        }
      }
      double[] result = fuse.apply(key, part);
      for (int i = 0; i < module.segments().size(); i++) {
        FusedModule.Segment segment = module.segments().get(i);
        if (segment.key().equals(key)) {
          System.arraycopy(result, Math.toIntExact(segment.moduleRow() * columns), values, Math.toIntExact(starts[i] * columns),
              Math.toIntExact(segment.rows() * columns));
        }
      }
    }
    return values;
  }

  @Override
  public void applyOnDevice(TensorSpec spec, NDArray source, NDArray weight) {
    Float64Factors factors = scaledFactors(spec);
    DeviceFusion.fuse(source, weight, factors.up(), factors.down(), factors.rank(), label(spec.name()));
  }

  @Override
  public void applyAllOnDevice(List<TensorSpec> specs, List<NDArray> weights, FactorCache factorCache) {
    List<DeviceFusion.Job> jobs = new ArrayList<>(specs.size());
    for (int i = 0; i < specs.size(); i++) {
      TensorSpec spec = specs.get(i);
      jobs.add(new DeviceFusion.Job(weights.get(i), weights.get(i), () -> {
        Float64Factors factors = scaledFactors(spec);
        return new DeviceFusion.Factors(factors.up(), factors.down(), factors.rank());
      }, () -> terms(spec), label(spec.name())));
    }
    DeviceFusion.fuseAll(jobs, workers, factorCache);
  }

  /** The module's factors for weight {@code spec} as stored, where the device can form them. */
  private Optional<DeviceFusion.Terms> terms(TensorSpec spec) {
    return updates.terms(modules.get(spec.name())).map(terms -> new DeviceFusion.Terms(
        terms.stream().map(term -> new DeviceFusion.Term(term.up(), term.down(), term.rank(), term.coefficient(), term.module()))
            .toList(),
        factor));
  }

  /** The module's factors for weight {@code spec}, the up factor times this update's factor. */
  private Float64Factors scaledFactors(TensorSpec spec) {
    ModuleKey key = modules.get(spec.name());
    checkArgument(key != null, "this update does not change weight '%s'", spec.name());
    Float64Factors factors = updates.factors(key);
    double[] up = factors.up();
    for (int i = 0; i < up.length; i++) {
      up[i] *= factor;
    }
    return factors;
  }

  @Override
  public String describe(String name) {
    FusedModule fusedModule = fused.get(name);
    if (fusedModule != null) {
      return String.format(Locale.ROOT, "fused weight '%s' (%s)", name, fusedModule.originalPath());
    }
    return modules.containsKey(name) ? label(name) : DeviceUpdate.super.describe(name);
  }

  private String label(String name) {
    return String.format(Locale.ROOT, "module '%s' (weight '%s')", modules.get(name), name);
  }

  @Override
  public ForkJoinPool workers() {
    return workers;
  }

  @Override
  public String recipe() {
    return recipe;
  }

  @Override
  public void progress(long done, long total) {
    listener.weightsWritten(done, total);
  }
}

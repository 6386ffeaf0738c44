package dev.loramerge.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSet;
import dev.loramerge.DType;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.internal.fuse.FuseScratch;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.internal.linalg.LazyManager;
import dev.loramerge.merge.Float64Factors;
import dev.loramerge.merge.MergeListener;
import dev.loramerge.merge.ModuleUpdates;
import java.nio.ByteBuffer;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.stream.Collectors;

/**
 * A merger's update of the matched modules, times a factor, computed per weight on demand on the
 * fuser's workers.
 */
final class MergedWeightUpdate implements WeightUpdate {
  private final ModuleUpdates updates;
  private final MergeListener listener;
  private final ImmutableMap<String, ModuleKey> modules;
  private final double factor;
  private final String recipe;
  private final ForkJoinPool workers;
  private final FuseScratch scratch;
  private final ImmutableMap<String, FusedModule> fused;
  private final ImmutableSet<ModuleKey> matched;

  MergedWeightUpdate(
      ModuleUpdates updates, MergeListener listener, ImmutableMap<String, ModuleKey> modules, double factor, String recipe,
      ForkJoinPool workers, FuseScratch scratch) {
    this.workers = workers;
    this.scratch = scratch;
    this.updates = updates;
    this.listener = listener;
    this.modules = modules;
    this.factor = factor;
    this.recipe = recipe;
    this.fused = ImmutableMap.of();
    this.matched = ImmutableSet.of();
  }

  private MergedWeightUpdate(MergedWeightUpdate update, ImmutableMap<String, FusedModule> fused, ImmutableSet<ModuleKey> matched) {
    this.workers = update.workers;
    this.scratch = update.scratch;
    this.updates = update.updates;
    this.listener = update.listener;
    this.modules = update.modules;
    this.factor = update.factor;
    this.recipe = update.recipe;
    this.fused = fused;
    this.matched = matched;
  }

  /**
   * This update, also rewriting the fused weights {@code fused} (by weight name) with the rows of
   * those of their parts that are {@code matched}.
   */
  MergedWeightUpdate withFused(ImmutableMap<String, FusedModule> fused, Set<ModuleKey> matched) {
    return new MergedWeightUpdate(this, fused, ImmutableSet.copyOf(matched));
  }

  @Override
  public ImmutableSet<String> names() {
    return fused.isEmpty() ? modules.keySet() : ImmutableSet.<String>builder().addAll(modules.keySet()).addAll(fused.keySet()).build();
  }

  @Override
  public void apply(TensorSpec spec, ByteBuffer weight, ByteBuffer into, DType dtype) {
    String name = spec.name();
    FusedModule fusedModule = fused.get(name);
    ModuleKey key = modules.get(name);
    checkArgument(key != null || fusedModule != null, "this update does not change weight '%s'", name);
    String label;
    double[] up;
    double[] down;
    if (fusedModule != null) {
      label = String.format(Locale.ROOT, "fused weight '%s' (%s)", name, fusedModule.originalPath());
      double[][] joined = joined(fusedModule);
      up = joined[0];
      down = joined[1];
    } else {
      label = String.format(Locale.ROOT, "module '%s' (weight '%s')", key, name);
      Float64Factors factors = updates.factors(key);
      up = factors.up();
      down = factors.down();
    }
    for (int i = 0; i < up.length; i++) {
      up[i] *= factor;
    }
    int rank = up.length / Math.toIntExact(spec.shape()[0]);
    Runnable kernel = () -> {
      try (LazyManager manager = new LazyManager(NDManager::newBaseManager)) {
        Fusion.fuse(scratch, manager, weight, spec.dtype(), spec.shape(), up, down, rank, into, dtype, label);
      }
    };
    // Targets may call from threads of their own (a file target's reader); the kernel's parallel
    // blocks run on the workers either way. An in-memory target replaying this update to undo
    // another fuse calls after this fuse's workers are shut down, and runs it on its own thread.
    if (ForkJoinTask.getPool() == workers || workers.isShutdown()) {
      kernel.run();
    } else {
      workers.submit(kernel).join();
    }
  }

  /**
   * The float64 factors of a fused weight: the matched parts' downs stacked, and their ups placed
   * in their segments' rows and their own columns (zeros elsewhere), so that each row of up·down
   * is exactly its part's, as if fused one part at a time.
   */
  private double[][] joined(FusedModule module) {
    List<ModuleKey> parts = module.keys().stream().filter(matched::contains).collect(Collectors.toList());
    Map<ModuleKey, Float64Factors> factors = new LinkedHashMap<>();
    Map<ModuleKey, Integer> columns = new LinkedHashMap<>();
    int rank = 0;
    for (ModuleKey part : parts) {
      Float64Factors partFactors = updates.factors(part);
      factors.put(part, partFactors);
      columns.put(part, rank);
      rank += partFactors.rank();
    }
    int in = Math.toIntExact(module.inFeatures());
    double[] down = new double[Math.multiplyExact(rank, in)];
    double[] up = new double[Math.multiplyExact(Math.toIntExact(module.outFeatures()), rank)];
    for (ModuleKey part : parts) {
      Float64Factors partFactors = factors.get(part);
      System.arraycopy(partFactors.down(), 0, down, columns.get(part) * in, partFactors.rank() * in);
    }
    long[] starts = module.fusedRows();
    for (int i = 0; i < module.segments().size(); i++) {
      FusedModule.Segment segment = module.segments().get(i);
      Float64Factors partFactors = factors.get(segment.key());
      if (partFactors == null) {
        continue;
      }
      int partRank = partFactors.rank();
      for (int row = 0; row < segment.rows(); row++) {
        System.arraycopy(
            partFactors.up(), Math.toIntExact((segment.moduleRow() + row) * partRank),
            up, Math.toIntExact((starts[i] + row) * rank + columns.get(segment.key())), partRank);
      }
    }
    return new double[][] {up, down};
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

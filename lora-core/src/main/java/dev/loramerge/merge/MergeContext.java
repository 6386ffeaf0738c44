package dev.loramerge.merge;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import dev.loramerge.DType;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.linalg.Randoms;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import java.util.Optional;
import java.util.function.Supplier;

/** {@link ModuleMerge} for one module, as the merger offers it to the algorithm. */
final class MergeContext implements ModuleMerge {
  private final ModuleKey key;
  private final ImmutableList<ModuleInput> moduleInputs;
  private final Supplier<NDManager> manager;
  private final int targetRank;
  private final boolean arraysWanted;
  private final Optional<DType> outputType;

  MergeContext(
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

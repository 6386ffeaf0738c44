package dev.loramerge.merge;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.linalg.Randoms;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.Offer;
import java.util.function.Supplier;

/** {@link ModuleMerge} for one module, as the merger offers it to the algorithm. */
final class MergeContext implements ModuleMerge {
  private final ModuleKey key;
  private final ImmutableList<ModuleInput> moduleInputs;
  private final Supplier<NDManager> manager;
  private final int targetRank;
  private final Offer offer;

  MergeContext(
      ModuleKey key, ImmutableList<ModuleInput> moduleInputs, Supplier<NDManager> manager, int targetRank, Offer offer) {
    this.key = key;
    this.moduleInputs = moduleInputs;
    this.manager = manager;
    this.targetRank = targetRank;
    this.offer = offer;
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
  public Offer offer() {
    return offer;
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

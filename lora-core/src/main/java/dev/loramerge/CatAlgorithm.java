package dev.loramerge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.spi.ModuleInput;
import dev.loramerge.spi.ModuleMerge;
import dev.loramerge.spi.ModuleUpdate;

/** {@link MergeAlgorithm#cat()}: concatenation along the rank, exact. */
final class CatAlgorithm implements MergeAlgorithm {
  static final CatAlgorithm INSTANCE = new CatAlgorithm();

  private CatAlgorithm() {}

  @Override
  public String name() {
    return "cat";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of();
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    NDList ups = new NDList();
    NDList downs = new NDList();
    for (ModuleInput input : module.inputs()) {
      ups.add(input.up().mul(input.weight() * input.scale()));
      downs.add(input.down());
    }
    NDArray up = ups.size() == 1 ? ups.head() : NDArrays.concat(ups, 1);
    NDArray down = downs.size() == 1 ? downs.head() : NDArrays.concat(downs, 0);
    return ModuleUpdate.factored(up, down);
  }

  @Override
  public boolean exactInFloat64() {
    return true;
  }

  @Override
  public boolean scalesOnly() {
    return true;
  }

  @Override
  public String toString() {
    return "Cat{}";
  }
}

package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraMergeException;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import java.util.Locale;

/**
 * Add difference, A + f·(B − C) (SuperMerger, sd-mecha), on three adapters' updates: each
 * module's result is w_A·Δ_A + f·(w_B·Δ_B − w_C·Δ_C), exact (the factors are concatenated as in
 * {@link Cat}; a module missing from an adapter contributes nothing). Ranks may differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class AddDifference implements MergeAlgorithm {
  private final double factor;

  private AddDifference(double factor) {
    checkArgument(Double.isFinite(factor), "factor must be finite, got %s", factor);
    this.factor = factor;
  }

  /** A + {@code factor}·(B − C). */
  public static AddDifference of(double factor) {
    return new AddDifference(factor);
  }

  /** The multiplier f of the difference. */
  public double factor() {
    return factor;
  }

  @Override
  public String name() {
    return "add_difference";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("factor", factor);
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    NDList ups = new NDList();
    NDList downs = new NDList();
    for (ModuleInput input : module.inputs()) {
      double sign;
      switch (input.index()) {
        case 0:
          sign = 1;
          break;
        case 1:
          sign = factor;
          break;
        case 2:
          sign = -factor;
          break;
        default:
          throw new LoraMergeException(
              String.format(Locale.ROOT, "add_difference takes three adapters (A, B, C), got input %d", input.index() + 1));
      }
      ups.add(input.up().mul(sign * input.weight() * input.scale()));
      downs.add(input.down());
    }
    NDArray up = ups.size() == 1 ? ups.head() : NDArrays.concat(ups, 1);
    NDArray down = downs.size() == 1 ? downs.head() : NDArrays.concat(downs, 0);
    return ModuleUpdate.factored(up, down);
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof AddDifference && Double.compare(factor, ((AddDifference) other).factor) == 0;
  }

  @Override
  public int hashCode() {
    return Double.hashCode(factor);
  }

  @Override
  public String toString() {
    return "AddDifference{factor=" + factor + "}";
  }
}

package dev.loramerge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.primitives.Doubles;
import com.google.common.primitives.Floats;
import dev.loramerge.spi.ModuleInput;
import dev.loramerge.spi.ModuleMerge;
import dev.loramerge.spi.ModuleUpdate;
import java.util.List;

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
    if (!module.arraysWanted()) {
      return mergeValues(module);
    }
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

  /**
   * The same in float32 values: each B times its coefficient rounded to float32, as libtorch
   * multiplies a float32 or fp16 tensor by a scalar, placed side by side; the A's stacked.
   */
  private static ModuleUpdate mergeValues(ModuleMerge module) {
    ImmutableList<ModuleInput> inputs = module.inputs();
    int rank = inputs.stream().mapToInt(input -> input.module().rank()).sum();
    int rows = Math.toIntExact(inputs.get(0).module().outFeatures());
    float[] up = new float[Math.multiplyExact(rows, rank)];
    float[][] downs = new float[inputs.size()][];
    int column = 0;
    for (int i = 0; i < inputs.size(); i++) {
      ModuleInput input = inputs.get(i);
      float coefficient = (float) (input.weight() * input.scale());
      float[] values = input.upValues();
      int inputRank = input.module().rank();
      for (int row = 0; row < rows; row++) {
        for (int l = 0; l < inputRank; l++) {
          up[row * rank + column + l] = values[row * inputRank + l] * coefficient;
        }
      }
      column += inputRank;
      downs[i] = input.downValues();
    }
    return ModuleUpdate.factored(up, downs.length == 1 ? downs[0] : Floats.concat(downs), rank);
  }

  /**
   * The cat of {@code modules} in float64, up then down, row-major: each B times its coefficient
   * (one rounding, as libtorch multiplies a float64 tensor by a scalar), side by side; the A's
   * stacked. The values the arrays path gives in float64, without a native call.
   */
  static double[][] doubleFactors(List<LoraModule> modules, double[] coefficients) {
    int rank = modules.stream().mapToInt(LoraModule::rank).sum();
    int rows = Math.toIntExact(modules.get(0).outFeatures());
    double[] up = new double[Math.multiplyExact(rows, rank)];
    double[][] downs = new double[modules.size()][];
    int column = 0;
    for (int i = 0; i < modules.size(); i++) {
      LoraModule module = modules.get(i);
      double[] values = module.up().toDoubleArray();
      int moduleRank = module.rank();
      for (int row = 0; row < rows; row++) {
        for (int l = 0; l < moduleRank; l++) {
          up[row * rank + column + l] = values[row * moduleRank + l] * coefficients[i];
        }
      }
      column += moduleRank;
      downs[i] = module.down().toDoubleArray();
    }
    return new double[][] {up, downs.length == 1 ? downs[0] : Doubles.concat(downs)};
  }

  @Override
  public boolean exactInFloat64() {
    return true;
  }

  @Override
  public String toString() {
    return "Cat{}";
  }
}

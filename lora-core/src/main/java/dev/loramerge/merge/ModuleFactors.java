package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.internal.linalg.LowRankProducts;
import dev.loramerge.internal.linalg.NdArrays;
import dev.loramerge.merge.spi.ModuleInput;
import java.util.function.Supplier;

/** One input's factors for one module, converted on first use in the module's manager. */
final class ModuleFactors implements ModuleInput {
  private final int index;
  private final LoraModule module;
  private final double weight;
  private final Supplier<NDManager> manager;
  private final DataType computeType;
  private NDArray down;
  private NDArray up;
  private NDArray delta;

  ModuleFactors(int index, LoraModule module, double weight, Supplier<NDManager> manager, DataType computeType) {
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

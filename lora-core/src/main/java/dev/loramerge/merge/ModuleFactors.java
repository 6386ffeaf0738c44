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
import dev.loramerge.merge.spi.Offer.Precision;
import java.util.function.Supplier;

/**
 * One input's factors for one module: block reads straight from the stored tensors, and the full
 * update computed at the merge's precision.
 */
final class ModuleFactors implements ModuleInput {
  private final int index;
  private final LoraModule module;
  /** A, read once: a Tucker LoCon's is computed from its core. */
  private final TensorData down;
  private final double weight;
  private final Supplier<NDManager> manager;
  private final Precision precision;

  ModuleFactors(int index, LoraModule module, double weight, Supplier<NDManager> manager, Precision precision) {
    this.index = index;
    this.module = module;
    this.down = module.down();
    this.weight = weight;
    this.manager = manager;
    this.precision = precision;
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
  public void readUp(int first, float[] out, int count) {
    module.up().readFloats(first, out, count);
  }

  @Override
  public void readDown(int first, float[] out, int count) {
    down.readFloats(first, out, count);
  }

  @Override
  public void readUp(int first, double[] out, int count) {
    module.up().readDoubles(first, out, count);
  }

  @Override
  public void readDown(int first, double[] out, int count) {
    down.readDoubles(first, out, count);
  }

  @Override
  public float[] delta() {
    if (precision == Precision.FLOAT32 && LowRankProducts.VECTOR_API) {
      return LowRankProducts.product(module.up().toFloatArray(), down.toFloatArray(), module.rank(), scale());
    }
    try (NDArray product = deltaArray()) {
      return NdArrays.floatValues(product);
    }
  }

  /**
   * s·B·A as PEFT computes it, (B·A)·s, in the merge's precision, in the module's manager. A
   * power-of-two s scales every partial sum exactly, so it goes into the smaller factor instead,
   * which gives the same bits (short of subnormal or overflowing entries) and saves a pass over
   * the m×n product.
   */
  NDArray deltaArray() {
    try (NDArray up = load(module.up(), module.outFeatures(), module.rank());
        NDArray down = load(this.down, module.rank(), this.down.numel() / module.rank())) {
      double scale = scale();
      if (scale == 1) {
        return up.matMul(down);
      }
      if (!NdArrays.isPowerOfTwo(scale)) {
        return up.matMul(down).muli(scale);
      }
      if (up.size() < down.size()) {
        try (NDArray scaledUp = up.mul(scale)) {
          return scaledUp.matMul(down);
        }
      }
      try (NDArray scaledDown = down.mul(scale)) {
        return up.matMul(scaledDown);
      }
    }
  }

  private NDArray load(TensorData tensor, long... shape) {
    if (precision == Precision.FLOAT64 && tensor.dtype() == DType.F64) {
      return manager.get().create(tensor.toDoubleArray(), new Shape(shape));
    }
    // Factors narrower than F64 widen to float32, and on to float64, exactly.
    NDArray single = NdArrays.float32(manager.get(), tensor, shape);
    return precision == Precision.FLOAT64 ? single.toType(DataType.FLOAT64, false) : single;
  }
}

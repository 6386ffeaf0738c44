package dev.loramerge.analysis;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import dev.loramerge.LoraModule;
import dev.loramerge.internal.linalg.NdArrays;
import java.util.List;

/**
 * Frobenius norms and inner products of LoRA updates computed from their factors, never from the
 * m×n updates: for U = Σⱼ cⱼ·BⱼAⱼ stacked as B̂·Â, ‖U‖² = Σ (B̂ᵀB̂) ∘ (ÂÂᵀ), an R×R sum.
 *
 * <p>Thread-safe; each call owns its NDManager.
 */
public final class UpdateNorms {
  private UpdateNorms() {}

  /** ‖actual − reference‖ and ‖reference‖ for one module. */
  public record Distance(double difference, double reference) {
    /** ‖actual − reference‖ / ‖reference‖. */
    public double relative() {
      return difference / reference;
    }
  }

  /**
   * How far {@code actual}'s update is from the weighted sum Σ wᵢ·sᵢ·BᵢAᵢ of {@code terms}' updates
   * (all for the same base weight).
   */
  public static Distance distance(LoraModule actual, List<LoraModule> terms, List<Double> weights) {
    checkArgument(terms.size() == weights.size(), "%s terms but %s weights", terms.size(), weights.size());
    if (!actual.adapterKind().factored() || terms.stream().anyMatch(term -> !term.adapterKind().factored())) {
      double[] reference = new double[Math.toIntExact(dev.loramerge.TensorData.numel(actual.weightShape()))];
      for (int i = 0; i < terms.size(); i++) {
        addDense(reference, terms.get(i), weights.get(i));
      }
      double[] difference = reference.clone();
      addDense(difference, actual, -1);
      return new Distance(Math.sqrt(dot(difference, difference)), Math.sqrt(dot(reference, reference)));
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDList ups = new NDList();
      NDList downs = new NDList();
      for (int i = 0; i < terms.size(); i++) {
        add(manager, ups, downs, terms.get(i), weights.get(i));
      }
      double reference = squaredNorm(NDArrays.concat(ups, 1), NDArrays.concat(downs, 0));
      add(manager, ups, downs, actual, -1);
      double difference = squaredNorm(NDArrays.concat(ups, 1), NDArrays.concat(downs, 0));
      return new Distance(Math.sqrt(Math.max(0, difference)), Math.sqrt(Math.max(0, reference)));
    }
  }

  /**
   * ⟨wₐ·sₐ·BₐAₐ, w_b·s_b·B_bA_b⟩, the Frobenius inner product of two modules' weighted updates, as
   * Σ (BₐᵀB_b) ∘ (AₐA_bᵀ).
   */
  public static double inner(LoraModule a, double weightA, LoraModule b, double weightB) {
    if (!a.adapterKind().factored() || !b.adapterKind().factored()) {
      return weightA * weightB * dot(a.deltaF64(), b.deltaF64());
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDList ups = new NDList();
      NDList downs = new NDList();
      add(manager, ups, downs, a, weightA);
      add(manager, ups, downs, b, weightB);
      NDArray upProduct = ups.get(0).transpose().matMul(ups.get(1));
      NDArray downProduct = downs.get(0).matMul(downs.get(1).transpose());
      return upProduct.mul(downProduct).sum().getDouble();
    }
  }

  /** ‖s·B·A‖ of one module. */
  public static double norm(LoraModule module) {
    if (!module.adapterKind().factored()) {
      double[] delta = module.deltaF64();
      return Math.sqrt(dot(delta, delta));
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDList ups = new NDList();
      NDList downs = new NDList();
      add(manager, ups, downs, module, 1);
      return Math.sqrt(Math.max(0, squaredNorm(ups.head(), downs.head())));
    }
  }

  /**
   * Adds {@code weight} times the module's update to {@code sum}: modules of kinds without LoRA
   * factors are measured on their full update, one module at a time (a DoRA module on its ΔW
   * before the magnitude renormalises it).
   */
  private static void addDense(double[] sum, LoraModule module, double weight) {
    double[] delta = module.deltaF64();
    checkArgument(delta.length == sum.length, "module '%s' updates %s values, not %s", module.key(), delta.length, sum.length);
    for (int i = 0; i < sum.length; i++) {
      sum[i] += weight * delta[i];
    }
  }

  private static double dot(double[] a, double[] b) {
    checkArgument(a.length == b.length, "updates of %s and %s values", a.length, b.length);
    double sum = 0;
    for (int i = 0; i < a.length; i++) {
      sum += a[i] * b[i];
    }
    return sum;
  }

  private static void add(NDManager manager, NDList ups, NDList downs, LoraModule module, double weight) {
    int rank = module.rank();
    NDArray down = NdArrays.float32(manager, module.down(), rank, module.down().numel() / rank).toType(DataType.FLOAT64, false);
    NDArray up = NdArrays.float32(manager, module.up(), module.outFeatures(), rank).toType(DataType.FLOAT64, false);
    ups.add(up.mul(weight * module.scale()));
    downs.add(down);
  }

  private static double squaredNorm(NDArray up, NDArray down) {
    return up.transpose().matMul(up).mul(down.matMul(down.transpose())).sum().getDouble();
  }
}

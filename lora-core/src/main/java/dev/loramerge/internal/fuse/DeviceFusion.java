package dev.loramerge.internal.fuse;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;

/**
 * Fusing where the weight lives: {@code W' = W + up·down} computed with libtorch's kernels on the
 * weight's device (a GPU, typically), rounded once from the float64 sum to the weight's dtype, and
 * written into the weight without its values ever leaving the device.
 *
 * <p>The bytes are those {@link Fusion} writes on the host. The sum is formed in float64 (the
 * product, then the weight added in place, which widens it exactly). float64 and float32 weights
 * take libtorch's cast, which rounds to nearest even. fp16 and bf16 do not: libtorch converts
 * float64 to them through float32, which rounds twice, and the second rounding is wrong exactly
 * where the float32 value {@code f} lies halfway between two neighbours of the narrow format while
 * the float64 sum does not. Such an {@code f} is found without bit manipulation: with {@code h}
 * the narrow value it rounds to, {@code f} is a tie exactly when {@code f ≠ h} and the reflection
 * {@code 2f − h} is itself a narrow value (two narrow values equally far on either side of {@code
 * f} are neighbours, since anything between them would be nearer). For those few elements the
 * float64 sum picks the side, and a float64 sum equal to {@code f} keeps libtorch's even choice.
 *
 * <p>Before the weight is written, every rounded value is checked to be finite; a NaN, an
 * infinity or an overflow of the narrow format is reported with the element's float64 value and
 * the weight is left as it was.
 */
public final class DeviceFusion {
  private DeviceFusion() {}

  /**
   * Sets {@code weight} to {@code source + up·down}, rounded once from the float64 sum to the
   * weight's dtype (F64, F32, F16 or BF16), computed on the weight's device. {@code source} has
   * the weight's shape; it may be the weight itself, another array on its device, or an array in
   * host memory, which is copied over first. {@code up} is m×r and {@code down} r×(numel/m),
   * row-major float64 values. Every array made on the way belongs to a sub-manager of the weight's
   * manager that is closed before this returns.
   *
   * @throws dev.loramerge.LoraMergeException naming {@code label} when a result is NaN, infinite
   *     or beyond the dtype's range; the weight is then unchanged
   */
  public static void fuse(NDArray source, NDArray weight, double[] up, double[] down, int rank, String label) {
    DType dtype = Fusion.dtypeOf(weight.getDataType(), label);
    Shape shape = weight.getShape();
    long rows = shape.dimension() == 0 ? 1 : shape.get(0);
    long numel = shape.size();
    checkArgument(
        rank > 0 && up.length == rows * rank && (long) down.length * rows == numel * rank,
        "%s: factors of %s and %s values do not make a rank-%s update of %s elements in %s rows",
        label, up.length, down.length, rank, numel, rows);
    checkArgument(source.getShape().equals(shape), "%s: source of shape %s for a weight of shape %s", label, source.getShape(), shape);
    try (NDManager scratch = weight.getManager().newSubManager(weight.getDevice())) {
      NDArray from = source;
      if (!source.getDevice().equals(weight.getDevice())) {
        from = source.toDevice(weight.getDevice(), true);
        from.attach(scratch);
      }
      NDArray sum = scratch.create(up, new Shape(rows, rank))
          .matMul(scratch.create(down, new Shape(rank, numel / rows)))
          .reshape(shape);
      sum.addi(from);
      NDArray rounded;
      NDArray probe;
      if (dtype == DType.F64) {
        rounded = sum;
        probe = sum;
      } else if (dtype == DType.F32) {
        rounded = sum.toType(DataType.FLOAT32, false);
        probe = rounded;
      } else {
        NDArray single = sum.toType(DataType.FLOAT32, false);
        rounded = single.toType(weight.getDataType(), false);
        // Exact: h is the narrow value nearest f, so f − h is a float32 value.
        probe = single.sub(rounded.toType(DataType.FLOAT32, false));
        correctTies(sum, single, rounded, probe);
      }
      checkFinite(sum, probe, dtype, label);
      weight.set(new NDIndex("..."), rounded);
    }
  }

  /**
   * Rounds again, from the float64 {@code sum}, the elements whose float32 value {@code single} is
   * a tie of the narrow format; {@code below} is {@code single − rounded} in float32. Arrays made
   * here belong to {@code sum}'s manager.
   */
  private static void correctTies(NDArray sum, NDArray single, NDArray rounded, NDArray below) {
    NDArray mirrored = single.add(below);
    NDArray ties = mirrored.toType(rounded.getDataType(), false)
        .toType(DataType.FLOAT32, false)
        .eq(mirrored)
        .logicalAnd(below.neq(0));
    NDArray indices = ties.flatten().nonzero().flatten();
    if (indices.isEmpty()) {
      return;
    }
    NDArray exact = sum.take(indices);
    NDArray tie = single.take(indices);
    NDArray even = rounded.take(indices).toType(DataType.FLOAT32, false);
    NDArray odd = mirrored.take(indices);
    NDArray upward = NDArrays.where(exact.gt(tie), even.maximum(odd), even);
    NDArray chosen = NDArrays.where(exact.lt(tie), even.minimum(odd), upward);
    rounded.flatten().set(new NDIndex("{}", indices), chosen.toType(rounded.getDataType(), false));
  }

  /**
   * Throws for the first element of {@code probe} that is not finite: the rounded value itself,
   * or for fp16 and bf16 the rounding's residue, which is infinite or NaN exactly when the rounded
   * value is.
   */
  private static void checkFinite(NDArray sum, NDArray probe, DType dtype, String label) {
    double largest = probe.abs().max().toType(DataType.FLOAT64, false).getDouble();
    if (Double.isFinite(largest)) {
      return;
    }
    NDArray flat = probe.flatten();
    long index = flat.isInfinite().logicalOr(flat.isNaN()).nonzero().getLong(0, 0);
    throw Fusion.notRepresentable(label, sum.flatten().toType(DataType.FLOAT64, false).get(index).getDouble(), index, dtype);
  }
}

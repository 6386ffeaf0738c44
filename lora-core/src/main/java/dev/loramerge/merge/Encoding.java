package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.internal.linalg.NdArrays;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.spi.Offer.Precision;
import java.util.Arrays;
import java.util.Locale;
import java.util.Optional;

/**
 * Turns merged factors into a module of the output type: each representation rounded once,
 * pruned after any re-ranking, and checked to be finite. Thread-safe.
 */
final class Encoding {
  private final Optional<PostPrune> prune;

  Encoding(Optional<PostPrune> prune) {
    this.prune = prune;
  }

  /** The pruning applied after merging, if any. */
  Optional<PostPrune> prune() {
    return prune;
  }

  /** Module {@code key} like {@code like} (its layout) with {@code merged} factors in {@code outputType}. */
  LoraModule toModule(ModuleKey key, LoraModule like, Merged merged, DType outputType) {
    long rank = merged.rank();
    // From the weight's shape, not the factors': a module of another kind has none.
    long[] weight = like.weightShape();
    long[] downShape = weight.clone();
    downShape[0] = rank;
    long[] upShape = weight.length == 4 ? new long[] {weight[0], rank, 1, 1} : new long[] {weight[0], rank};
    TensorData newDown;
    TensorData newUp;
    if (merged.tensors() != null) {
      newDown = pruned(merged.tensors()[1].reshape(downShape));
      newUp = pruned(merged.tensors()[0].reshape(upShape));
    } else if (merged.up() != null) {
      newDown = pruned(NdArrays.toTensor(merged.down(), outputType, downShape));
      newUp = pruned(NdArrays.toTensor(merged.up(), outputType, upShape));
    } else if (merged.upDoubles() != null) {
      newDown = pruned(TensorData.ofDoubles(merged.downDoubles(), outputType, downShape));
      newUp = pruned(TensorData.ofDoubles(merged.upDoubles(), outputType, upShape));
    } else {
      newDown = pruned(TensorData.ofFloats(merged.downValues(), outputType, downShape));
      newUp = pruned(TensorData.ofFloats(merged.upValues(), outputType, upShape));
    }
    checkFinite(key, newDown, "down");
    checkFinite(key, newUp, "up");
    return LoraModule.of(key, newDown, newUp, rank);
  }

  /**
   * {@code merged} as a fuse adds it: rounded to {@code precision}, pruned in float32, in float64.
   * Values are converted in Java as libtorch would convert arrays of them, so that a fuse with no
   * dense update starts no engine.
   */
  Float64Factors toFloat64(Merged merged, Precision precision) {
    if (merged.up() != null) {
      DataType computeType = precision == Precision.FLOAT64 ? DataType.FLOAT64 : DataType.FLOAT32;
      return new Float64Factors(prunedDoubles(merged.up(), computeType), prunedDoubles(merged.down(), computeType), merged.rank());
    }
    if (merged.upDoubles() != null && precision == Precision.FLOAT64 && prune.isEmpty()) {
      return new Float64Factors(merged.upDoubles(), merged.downDoubles(), merged.rank());
    }
    float[] up = merged.upDoubles() != null ? FloatFormats.rounded(merged.upDoubles()) : merged.upValues();
    float[] down = merged.upDoubles() != null ? FloatFormats.rounded(merged.downDoubles()) : merged.downValues();
    prune.ifPresent(rule -> {
      rule.apply(up);
      rule.apply(down);
    });
    return new Float64Factors(FloatFormats.widened(up), FloatFormats.widened(down), merged.rank());
  }

  /** A merged factor array in {@code computeType}, pruned there, as float64 values for a fuse. */
  private double[] prunedDoubles(NDArray factor, DataType computeType) {
    NDArray typed = factor.toType(computeType, false);
    if (prune.isPresent()) {
      float[] values = typed.toType(DataType.FLOAT32, false).toFloatArray();
      prune.get().apply(values);
      typed = typed.getManager().create(values, typed.getShape());
    }
    return typed.toType(DataType.FLOAT64, false).toDoubleArray();
  }

  private TensorData pruned(TensorData factor) {
    if (prune.isEmpty()) {
      return factor;
    }
    float[] values = factor.toFloatArray();
    prune.get().apply(values);
    TensorData pruned = TensorData.ofFloats(values, factor.shape());
    return factor.dtype() == DType.F32 ? pruned : pruned.to(factor.dtype());
  }

  private static void checkFinite(ModuleKey key, TensorData tensor, String factor) {
    long index = Fusion.firstNonFinite(tensor.bytes(), tensor.dtype());
    if (index >= 0) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s': merged %s factor has %s at element %d (of %s %s)",
              key, factor, tensor.getDouble(index), index, tensor.dtype().safetensorsName(),
              Arrays.toString(tensor.shape())));
    }
  }
}

package dev.loramerge.algorithms;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import java.util.Optional;

/**
 * PEFT's {@code linear}: with cᵢ = wᵢ·sᵢ, A' = Σ sign(cᵢ)·√|cᵢ|·Aᵢ and B' = Σ √|cᵢ|·Bᵢ (the sign on
 * A only, as PEFT does since its negative-weight fix). All ranks must be equal. B'A' has cross
 * terms BᵢAⱼ, so it equals the weighted sum only for one adapter; {@link Cat} is exact.
 *
 * <p>It has no parameters; instances are equal.
 */
public record Linear() implements MergeAlgorithm {
  /** Float32 values per block of an encoded sum: small enough to stay in a core's cache. */
  private static final int BLOCK = 8192;

  /** The method. */
  public static Linear of() {
    return new Linear();
  }

  @Override
  public String name() {
    return "linear";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of();
  }

  @Override
  public Requirements requirements() {
    return Requirements.none().withEqualRanks();
  }

  /** {@link Svd}: PEFT's {@code svd} is the same weighted sum, of the full updates. */
  @Override
  public Optional<MergeAlgorithm> onFullUpdates() {
    return Optional.of(Svd.of());
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    List<ModuleInput> inputs = module.inputs();
    // Each factor times its coefficient rounded to float32, summed in order in float32: what
    // PEFT's tensor arithmetic does, without a native call per step.
    float[] downCoefficients = new float[inputs.size()];
    float[] upCoefficients = new float[inputs.size()];
    for (int i = 0; i < inputs.size(); i++) {
      double c = inputs.get(i).weight() * inputs.get(i).scale();
      double root = Math.sqrt(Math.abs(c));
      downCoefficients[i] = (float) (Math.signum(c) * root);
      upCoefficients[i] = (float) root;
    }
    LoraModule first = inputs.get(0).module();
    int rank = first.rank();
    long columns = first.down().numel() / rank;
    if (module.offer().encoding().isPresent()) {
      DType type = module.offer().encoding().get();
      return new ModuleUpdate.Encoded(
          encodedSum(inputs, upCoefficients, Factor.UP, type, first.outFeatures(), rank),
          encodedSum(inputs, downCoefficients, Factor.DOWN, type, rank, columns));
    }
    float[] up = new float[Math.toIntExact(Math.multiplyExact(first.outFeatures(), rank))];
    float[] down = new float[Math.toIntExact(Math.multiplyExact(rank, columns))];
    sum(inputs, upCoefficients, Factor.UP, up.length, (values, count, start) -> System.arraycopy(values, 0, up, start, count));
    sum(inputs, downCoefficients, Factor.DOWN, down.length, (values, count, start) -> System.arraycopy(values, 0, down, start, count));
    return new ModuleUpdate.Factors(up, down, rank);
  }

  /** B or A of every input. */
  private enum Factor {
    UP {
      @Override
      void read(ModuleInput input, int first, float[] out, int count) {
        input.readUp(first, out, count);
      }

      @Override
      TensorData of(LoraModule module) {
        return module.up();
      }
    },
    DOWN {
      @Override
      void read(ModuleInput input, int first, float[] out, int count) {
        input.readDown(first, out, count);
      }

      @Override
      TensorData of(LoraModule module) {
        return module.down();
      }
    };

    /** Reads the factor's values {@code [first, first + count)} into {@code out[0, count)}. */
    abstract void read(ModuleInput input, int first, float[] out, int count);

    /** The factor as stored. */
    abstract TensorData of(LoraModule module);
  }

  /** Takes {@code values[0, count)}, the elements of a factor from {@code first} on. */
  private interface Block {
    void put(float[] values, int count, int first);
  }

  /**
   * {@link #sum}, encoded in {@code type} as each block is done: no float32 copy of the factor.
   * Factors all of a half type written in it are summed from their bytes in one pass ({@link
   * FloatFormats#weightedSum}), the same arithmetic.
   */
  private static TensorData encodedSum(
      List<ModuleInput> inputs, float[] coefficients, Factor factor, DType type, long rows, long columns) {
    int count = Math.toIntExact(Math.multiplyExact(rows, columns));
    ByteBuffer out = ByteBuffer.allocate(Math.multiplyExact(count, type.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
    if ((type == DType.F16 || type == DType.BF16) && inputs.stream().allMatch(input -> factor.of(input.module()).dtype() == type)) {
      ByteBuffer[] factors = inputs.stream().map(input -> factor.of(input.module()).bytes()).toArray(ByteBuffer[]::new);
      FloatFormats.weightedSum(type == DType.F16, factors, coefficients, out, count);
    } else {
      sum(inputs, coefficients, factor, count, (values, length, first) -> FloatFormats.encode(type, values, length, out, first));
    }
    return TensorData.of(type, new long[] {rows, columns}, out);
  }

  /**
   * One factor's sum over {@code inputs} (its {@code count} elements), a block at a time into
   * {@code sink}: each input's values times its coefficient, summed in order in float32.
   */
  private static void sum(List<ModuleInput> inputs, float[] coefficients, Factor factor, int count, Block sink) {
    float[] sum = new float[Math.min(count, BLOCK)];
    float[] values = new float[sum.length];
    for (int first = 0; first < count; first += sum.length) {
      int length = Math.min(sum.length, count - first);
      factor.read(inputs.get(0), first, sum, length);
      scale(sum, length, coefficients[0]);
      for (int i = 1; i < inputs.size(); i++) {
        factor.read(inputs.get(i), first, values, length);
        addScaled(sum, values, length, coefficients[i]);
      }
      sink.put(sum, length, first);
    }
  }

  // The loops are methods of their own because C2 vectorizes them here, and leaves them scalar
  // when they are written inside sum's block loop.
  private static void scale(float[] values, int length, float coefficient) {
    for (int i = 0; i < length; i++) {
      values[i] *= coefficient;
    }
  }

  private static void addScaled(float[] sum, float[] values, int length, float coefficient) {
    for (int i = 0; i < length; i++) {
      sum[i] += values[i] * coefficient;
    }
  }

  @Override
  public String toString() {
    return "Linear{}";
  }
}

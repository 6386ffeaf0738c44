package dev.loramerge.merge;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.primitives.Doubles;
import com.google.common.primitives.Floats;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.Offer;
import dev.loramerge.merge.spi.Offer.Precision;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.ShortBuffer;
import java.util.List;

/** {@link MergeAlgorithm#cat()}: concatenation along the rank, exact. */
final class CatAlgorithm implements MergeAlgorithm {
  static final CatAlgorithm INSTANCE = new CatAlgorithm();
  /** Float32 values per block of {@link #encode}: small enough to stay in a core's cache. */
  private static final int BLOCK = 8192;

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
    Offer offer = module.offer();
    if (offer.encoding().isPresent()) {
      return encode(module.inputs(), offer.encoding().get());
    }
    return offer.precision() == Precision.FLOAT64 ? mergeDoubles(module.inputs()) : mergeValues(module);
  }

  /**
   * The cat in float32 values: each B times its coefficient rounded to float32, as libtorch
   * multiplies a float32 or fp16 tensor by a scalar, placed side by side; the A's stacked.
   */
  private static ModuleUpdate mergeValues(ModuleMerge module) {
    ImmutableList<ModuleInput> inputs = module.inputs();
    int rank = inputs.stream().mapToInt(input -> input.module().rank()).sum();
    float[] up = new float[Math.multiplyExact(Math.toIntExact(inputs.get(0).module().outFeatures()), rank)];
    scaledUps(inputs, rank, (values, count, first) -> System.arraycopy(values, 0, up, first, count));
    float[][] downs = new float[inputs.size()][];
    for (int i = 0; i < downs.length; i++) {
      int count = Math.toIntExact(inputs.get(i).module().down().numel());
      downs[i] = new float[count];
      inputs.get(i).readDown(0, downs[i], count);
    }
    return new ModuleUpdate.Factors(up, downs.length == 1 ? downs[0] : Floats.concat(downs), rank);
  }

  /**
   * {@link #mergeValues}'s factors encoded straight in {@code dtype}, {up (out×r), down
   * (r×in·k·k)}: the same float32 products, each rounded once as its block is done, instead of
   * from float32 copies of every input and of the result (which were four times the output's
   * memory traffic and allocation for an fp16 merge). A's already in {@code dtype} are copied
   * byte for byte, which is what widening to float32 and rounding back gives.
   */
  private static ModuleUpdate encode(List<ModuleInput> inputs, DType dtype) {
    int rank = inputs.stream().mapToInt(input -> input.module().rank()).sum();
    int rows = Math.toIntExact(inputs.get(0).module().outFeatures());
    ByteBuffer up = allocate(Math.multiplyExact((long) rows, rank), dtype);
    if ((dtype == DType.F16 || dtype == DType.BF16) && inputs.stream().allMatch(input -> input.module().up().dtype() == dtype)) {
      halfUps(inputs, rank, dtype == DType.F16, up);
    } else {
      scaledUps(inputs, rank, (values, count, first) -> FloatFormats.encode(dtype, values, count, up, first));
    }
    long downCount = inputs.stream().mapToLong(input -> input.module().down().numel()).sum();
    ByteBuffer down = allocate(downCount, dtype);
    float[] source = new float[BLOCK];
    int offset = 0;
    for (ModuleInput input : inputs) {
      TensorData factor = input.module().down();
      int count = Math.toIntExact(factor.numel());
      if (factor.dtype() == dtype) {
        down.put(offset * dtype.byteSize(), factor.bytes(), 0, count * dtype.byteSize());
      } else {
        for (int first = 0; first < count; first += source.length) {
          int length = Math.min(source.length, count - first);
          input.readDown(first, source, length);
          FloatFormats.encode(dtype, source, length, down, offset + first);
        }
      }
      offset += count;
    }
    return new ModuleUpdate.Encoded(
        TensorData.of(dtype, new long[] {rows, rank}, up), TensorData.of(dtype, new long[] {rank, downCount / rank}, down));
  }

  /** Takes {@code values[0, count)}, the elements of a factor from {@code first} on. */
  private interface Block {
    void put(float[] values, int count, int first);
  }

  /**
   * Cat's B' (out×{@code rank}, row-major) in float32, a block of rows at a time into {@code
   * sink}: each input's B times its coefficient rounded to float32, side by side.
   */
  private static void scaledUps(List<ModuleInput> inputs, int rank, Block sink) {
    int widest = inputs.stream().mapToInt(input -> input.module().rank()).max().orElseThrow();
    int rows = Math.toIntExact(inputs.get(0).module().outFeatures());
    int blockRows = Math.max(1, BLOCK / rank);
    float[] source = new float[blockRows * widest];
    float[] block = new float[blockRows * rank];
    for (int firstRow = 0; firstRow < rows; firstRow += blockRows) {
      int count = Math.min(blockRows, rows - firstRow);
      int column = 0;
      for (ModuleInput input : inputs) {
        int inputRank = input.module().rank();
        float coefficient = (float) (input.weight() * input.scale());
        input.readUp(firstRow * inputRank, source, count * inputRank);
        if (inputRank == rank) {
          scale(source, 0, block, 0, count * rank, coefficient);
        } else {
          for (int row = 0; row < count; row++) {
            scale(source, row * inputRank, block, row * rank + column, inputRank, coefficient);
          }
        }
        column += inputRank;
      }
      sink.put(block, count * rank, firstRow * rank);
    }
  }

  /**
   * {@link #scaledUps} for B's stored in the half type they are written in, from their bytes: each
   * block of an input's rows scaled and rounded in one pass ({@link FloatFormats#scale}), then
   * placed side by side; the same arithmetic, without float32 arrays.
   */
  private static void halfUps(List<ModuleInput> inputs, int rank, boolean float16, ByteBuffer up) {
    int rows = Math.toIntExact(inputs.get(0).module().outFeatures());
    int blockRows = Math.max(1, BLOCK / rank);
    int widest = inputs.stream().mapToInt(input -> input.module().rank()).max().orElseThrow();
    short[] scaled = new short[blockRows * widest];
    short[] block = new short[blockRows * rank];
    ShortBuffer target = up.duplicate().order(ByteOrder.LITTLE_ENDIAN).position(0).asShortBuffer();
    for (int firstRow = 0; firstRow < rows; firstRow += blockRows) {
      int count = Math.min(blockRows, rows - firstRow);
      int column = 0;
      for (ModuleInput input : inputs) {
        int inputRank = input.module().rank();
        float coefficient = (float) (input.weight() * input.scale());
        short[] into = inputs.size() == 1 ? block : scaled;
        FloatFormats.scale(float16, input.module().up().bytes(), firstRow * inputRank, coefficient, into, 0, count * inputRank);
        if (into != block) {
          for (int row = 0; row < count; row++) {
            System.arraycopy(scaled, row * inputRank, block, row * rank + column, inputRank);
          }
        }
        column += inputRank;
      }
      target.put(firstRow * rank, block, 0, count * rank);
    }
  }

  // A method of its own, so that C2 vectorizes it; nested in scaledUps' loops it stays scalar.
  private static void scale(float[] source, int from, float[] target, int to, int length, float coefficient) {
    for (int i = 0; i < length; i++) {
      target[to + i] = source[from + i] * coefficient;
    }
  }

  private static ByteBuffer allocate(long elements, DType dtype) {
    return ByteBuffer.allocate(Math.toIntExact(Math.multiplyExact(elements, dtype.byteSize()))).order(ByteOrder.LITTLE_ENDIAN);
  }

  /**
   * The cat in float64, the inputs read exactly: each B times its coefficient (one rounding, as
   * libtorch multiplies a float64 tensor by a scalar), side by side; the A's stacked.
   */
  private static ModuleUpdate mergeDoubles(List<ModuleInput> inputs) {
    int rank = inputs.stream().mapToInt(input -> input.module().rank()).sum();
    int rows = Math.toIntExact(inputs.get(0).module().outFeatures());
    double[] up = new double[Math.multiplyExact(rows, rank)];
    double[][] downs = new double[inputs.size()][];
    int column = 0;
    for (int i = 0; i < inputs.size(); i++) {
      ModuleInput input = inputs.get(i);
      int inputRank = input.module().rank();
      double coefficient = input.weight() * input.scale();
      double[] values = new double[rows * inputRank];
      input.readUp(0, values, values.length);
      for (int row = 0; row < rows; row++) {
        for (int l = 0; l < inputRank; l++) {
          up[row * rank + column + l] = values[row * inputRank + l] * coefficient;
        }
      }
      column += inputRank;
      downs[i] = new double[Math.toIntExact(input.module().down().numel())];
      input.readDown(0, downs[i], downs[i].length);
    }
    return new ModuleUpdate.DoubleFactors(up, downs.length == 1 ? downs[0] : Doubles.concat(downs), rank);
  }

  @Override
  public Requirements requirements() {
    return Requirements.none().withExactFloat64();
  }

  @Override
  public String toString() {
    return "Cat{}";
  }
}

package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.primitives.Doubles;
import com.google.common.primitives.Floats;
import dev.loramerge.DType;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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
    if (module.outputType().isPresent()) {
      return encode(module.inputs(), module.outputType().get());
    }
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
    float[] up = new float[Math.multiplyExact(Math.toIntExact(inputs.get(0).module().outFeatures()), rank)];
    scaledUps(inputs, rank, (values, count, first) -> System.arraycopy(values, 0, up, first, count));
    float[][] downs = inputs.stream().map(ModuleInput::downValues).toArray(float[][]::new);
    return ModuleUpdate.factored(up, downs.length == 1 ? downs[0] : Floats.concat(downs), rank);
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
    scaledUps(inputs, rank, (values, count, first) -> FloatFormats.encode(dtype, values, count, up, first));
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
    return ModuleUpdate.encoded(
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
        for (int row = 0; row < count; row++) {
          for (int l = 0; l < inputRank; l++) {
            block[row * rank + column + l] = source[row * inputRank + l] * coefficient;
          }
        }
        column += inputRank;
      }
      sink.put(block, count * rank, firstRow * rank);
    }
  }

  private static ByteBuffer allocate(long elements, DType dtype) {
    return ByteBuffer.allocate(Math.toIntExact(Math.multiplyExact(elements, dtype.byteSize()))).order(ByteOrder.LITTLE_ENDIAN);
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

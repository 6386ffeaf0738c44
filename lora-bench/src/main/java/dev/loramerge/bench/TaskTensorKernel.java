package dev.loramerge.bench;

import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.internal.TaskTensors;
import dev.loramerge.internal.linalg.Randoms;
import dev.loramerge.internal.select.MagnitudeSelect;
import java.util.SplittableRandom;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * The element-wise passes of the PEFT methods over one dense task tensor of an SDXL layer shape
 * (rows × columns of the weight), density 0.5: the Java loops that dominate the {@code *_svd}
 * methods (README, Performance).
 *
 * <ul>
 *   <li>{@code magnitudeSelect}: the radix select of the k-th largest |x|, k = ⌊density·n⌋;
 *   <li>{@code magnitudePrune}: that select, then zeroing all but the k largest (PEFT's {@code
 *       magnitude_based_pruning}, the first step of TIES and {@code magnitude_prune});
 *   <li>{@code tiesElectAndMerge}: TIES' sign election and disjoint mean of two task tensors
 *       already pruned to the density (weights 0.7 and 0.5, majority sign total);
 *   <li>{@code dareMask}: DARE's random drop and rescale of one task tensor from a fixed seed;
 *   <li>{@code dellaMask}: DELLA's drop and rescale by magnitude rank in each row (epsilon 0.15).
 * </ul>
 *
 * <p>No device parameter: these loops run on the Java heap whatever the merge's device, after the
 * merge has copied each task tensor off it. The two pruning kernels work in place, so each of
 * their invocations gets a fresh copy of the task tensor, made outside the measurement.
 *
 * <p>Recorded results are in docs/performance-history.md.
 */
public class TaskTensorKernel extends Kernel {
  private static final double DENSITY = 0.5;
  private static final double[] WEIGHTS = {0.7, 0.5};
  private static final long DARE_SEED = 7;
  private static final double DELLA_EPSILON = 0.15;

  @Param({"640x640", "1280x1280", "640x2048", "1280x10240", "5120x1280"})
  String shape;

  private float[] tensor;
  private int columns;
  private float[][] pruned;

  @Setup(Level.Trial)
  public void setUp() {
    long[] dims = KernelParams.shape(shape);
    int size = Math.toIntExact(dims[0] * dims[1]);
    columns = Math.toIntExact(dims[1]);
    SplittableRandom random = new SplittableRandom(1);
    tensor = gaussian(random, size);
    pruned = new float[][] {tensor.clone(), gaussian(random, size)};
    for (float[] taskTensor : pruned) {
      TaskTensors.pruneByMagnitude(taskTensor, DENSITY);
    }
  }

  private static float[] gaussian(SplittableRandom random, int size) {
    float[] values = new float[size];
    for (int i = 0; i < size; i++) {
      values[i] = (float) (Randoms.standardNormal(random) * 0.01);
    }
    return values;
  }

  /** A fresh copy of the task tensor before each invocation of an in-place kernel. */
  @State(Scope.Thread)
  public static class Scratch {
    float[] values;

    @Setup(Level.Trial)
    public void allocate(TaskTensorKernel kernel) {
      values = new float[kernel.tensor.length];
    }

    @Setup(Level.Invocation)
    public void refill(TaskTensorKernel kernel) {
      System.arraycopy(kernel.tensor, 0, values, 0, values.length);
    }
  }

  @Benchmark
  public float magnitudeSelect() {
    return MagnitudeSelect.kthLargestMagnitude(tensor, (int) (DENSITY * tensor.length));
  }

  @Benchmark
  public float[] magnitudePrune(Scratch scratch) {
    TaskTensors.pruneByMagnitude(scratch.values, DENSITY);
    return scratch.values;
  }

  @Benchmark
  public float[] tiesElectAndMerge() {
    return TaskTensors.electAndMerge(pruned, WEIGHTS, MajoritySign.TOTAL);
  }

  @Benchmark
  public float[] dareMask(Scratch scratch) {
    TaskTensors.pruneRandomly(scratch.values, DENSITY, DARE_SEED);
    return scratch.values;
  }

  @Benchmark
  public float[] dellaMask(Scratch scratch) {
    TaskTensors.pruneDella(scratch.values, columns, DENSITY, DELLA_EPSILON, new SplittableRandom(DARE_SEED));
    return scratch.values;
  }
}

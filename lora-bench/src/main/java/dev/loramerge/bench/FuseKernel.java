package dev.loramerge.bench;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.internal.fuse.FuseScratch;
import dev.loramerge.internal.fuse.Fusion;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * One fused layer, W' = W + up·down rounded once, for the SDXL layer shapes: the kernel that
 * bounds {@code fuse/file} and {@code fuse/memory}. {@code device=gpu} runs only where DJL sees
 * a GPU. The fork has the Vector API module, as {@code bin/lora fuse} does ({@link Kernel} says
 * how to time the scalar path).
 */
public class FuseKernel extends Kernel {
  @Param({"320x320", "640x2048", "1280x10240", "5120x1280"})
  String shape;

  @Param({"F16", "F32"})
  String dtype;

  @Param({"cpu"})
  String device;

  @Param({"32"})
  int rank;

  private NDManager manager;
  private ByteBuffer weight;
  private long[] dims;
  private double[] up;
  private double[] down;
  private final FuseScratch scratch = new FuseScratch();

  @Setup(Level.Trial)
  public void setUp() {
    manager = NDManager.newBaseManager(KernelParams.device(device));
    dims = KernelParams.shape(shape);
    long rows = dims[0];
    long columns = dims[1];
    ByteBuffer values =
        manager.randomNormal(0, 0.02f, new Shape(rows, columns), DataType.FLOAT32)
            .toType(Fusion.dataTypeOf(DType.valueOf(dtype)), false)
            .toByteBuffer();
    weight = ByteBuffer.allocateDirect(values.remaining()).order(ByteOrder.LITTLE_ENDIAN);
    weight.put(values).flip();
    up = manager.randomNormal(0, 0.01f, new Shape(rows, rank), DataType.FLOAT64).toDoubleArray();
    down = manager.randomNormal(0, 0.1f, new Shape(rank, columns), DataType.FLOAT64).toDoubleArray();
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    manager.close();
  }

  @Benchmark
  public ByteBuffer fuseLayer() {
    try (NDManager layer = manager.newSubManager()) {
      // Fusing over the same weight again and again only moves it by a few hundredths a time.
      DType type = DType.valueOf(dtype);
      ByteBuffer target = weight.duplicate();
      Fusion.fuse(scratch, () -> layer, target, type, dims, up, down, rank, target, type, "benchmark");
      return target;
    }
  }
}

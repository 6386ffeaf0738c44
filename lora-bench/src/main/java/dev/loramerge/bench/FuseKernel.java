package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.internal.fuse.FuseScratch;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * One fused layer, W' = W + up·down rounded once, for the SDXL layer shapes: the kernel that
 * bounds {@code fuse/file} and {@code fuse/memory}. The fork has the Vector API module, as {@code
 * bin/lora fuse} does ({@link Kernel} says how to time the scalar path).
 *
 * <p>{@code device=cpu} times the host kernel on the weight's bytes. {@code device=gpu} keeps the
 * weight as an NDArray on the GPU and times what an application does with GPU-resident weights:
 * the fuse through {@link WeightTarget#of(Map)} and {@link LoraFuser} (the merger's device the
 * GPU), then its unfuse, waiting for the device's queue before the operation ends. The unfuse is
 * part of the operation because a weight fused again and again through one target would keep every
 * fuse active; it restores the original kept on the device. {@code device=cpu-target} times the
 * same operation with the weight as an NDArray on the CPU: the like-for-like comparison with {@code
 * gpu}, and the same code path on machines without one. Without a GPU, {@code device=gpu} stops in
 * the set-up with an {@link IllegalStateException}, never measuring the CPU instead.
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
  /** {@code device=gpu} and {@code cpu-target}: the weight on the device, the target over it and the fuser of one module. */
  NDArray deviceWeight;
  private WeightTarget target;
  private LoraFuser fuser;

  @Setup(Level.Trial)
  public void setUp() {
    boolean throughTarget = !device.equals("cpu");
    Device on = KernelParams.device(device.equals("cpu-target") ? "cpu" : device);
    manager = NDManager.newBaseManager(on);
    dims = KernelParams.shape(shape);
    long rows = dims[0];
    long columns = dims[1];
    DataType type = Fusion.dataTypeOf(DType.valueOf(dtype));
    NDArray values = manager.randomNormal(0, 0.02f, new Shape(rows, columns), DataType.FLOAT32).toType(type, false);
    up = manager.randomNormal(0, 0.01f, new Shape(rows, rank), DataType.FLOAT64).toDoubleArray();
    down = manager.randomNormal(0, 0.1f, new Shape(rank, columns), DataType.FLOAT64).toDoubleArray();
    if (throughTarget) {
      deviceWeight = values;
      ModuleKey key = ModuleKey.of(Component.UNET, "kernel");
      LoraModule module =
          LoraModule.of(
              key,
              TensorData.ofDoubles(down, DType.F32, rank, columns),
              TensorData.ofDoubles(up, DType.F32, rows, rank),
              rank);
      target = WeightTarget.of(Map.of(key.path() + ".weight", deviceWeight));
      fuser = LoraFuser.of(LoraMerger.builder().add(LoraAdapter.builder().name("kernel").add(module).build(), 1.0).device(on).build());
      return;
    }
    ByteBuffer bytes = values.toByteBuffer();
    weight = ByteBuffer.allocateDirect(bytes.remaining()).order(ByteOrder.LITTLE_ENDIAN);
    weight.put(bytes).flip();
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    if (target != null) {
      target.trim();
    }
    manager.close();
  }

  @Benchmark
  public Object fuseLayer() throws IOException {
    if (deviceWeight != null) {
      fuser.fuseInto(target).unfuse();
      Devices.await(deviceWeight);
      return deviceWeight;
    }
    try (NDManager layer = manager.newSubManager()) {
      // Fusing over the same weight again and again only moves it by a few hundredths a time.
      DType type = DType.valueOf(dtype);
      ByteBuffer target = weight.duplicate();
      Fusion.fuse(scratch, () -> layer, target, type, dims, up, down, rank, target, type, "benchmark");
      return target;
    }
  }
}

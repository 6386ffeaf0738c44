package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import java.io.IOException;
import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

/** The kernels' device paths, forced onto the CPU ({@code device=cpu-target}) or refused without a GPU. */
class FuseKernelTest {
  private static FuseKernel kernel(String device, String dtype) {
    FuseKernel kernel = new FuseKernel();
    kernel.shape = "40x24";
    kernel.dtype = dtype;
    kernel.device = device;
    kernel.rank = 4;
    return kernel;
  }

  @Test
  void cpuTargetFusesThroughTheWeightTargetAndRestoresTheWeightEachOperation() throws IOException {
    for (String dtype : new String[] {"F16", "F32"}) {
      FuseKernel kernel = kernel("cpu-target", dtype);
      kernel.setUp();
      try {
        ByteBuffer original = kernel.deviceWeight.toByteBuffer();
        for (int i = 0; i < 3; i++) {
          Object result = kernel.fuseLayer();
          assertThat(result).isSameAs(kernel.deviceWeight);
          assertThat(((NDArray) result).getDevice()).isEqualTo(Device.cpu());
          assertThat(Devices.differingElements(((NDArray) result).toByteBuffer(), original, 4))
              .as("%s weight after fuse and unfuse %d", dtype, i)
              .isZero();
        }
      } finally {
        kernel.tearDown();
      }
    }
  }

  @Test
  void gpuWithoutOneStopsInTheSetUp() {
    assumeTrue(Engine.getInstance().getGpuCount() == 0, "a GPU is visible here");
    assertThatThrownBy(() -> kernel("gpu", "F16").setUp())
        .isInstanceOf(IllegalStateException.class)
        .hasMessageEndingWith("; run with -p device=cpu");
    MergeKernel merge = new MergeKernel();
    merge.module = "down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q";
    merge.method = "cat";
    merge.device = "gpu";
    assertThatThrownBy(merge::setUp).isInstanceOf(IllegalStateException.class).hasMessageStartingWith("no GPU visible to DJL");
  }
}

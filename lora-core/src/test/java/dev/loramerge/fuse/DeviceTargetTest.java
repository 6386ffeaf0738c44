package dev.loramerge.fuse;

import static dev.loramerge.fuse.FusedLoraTest.arrays;
import static dev.loramerge.fuse.FusedLoraTest.bytesOf;
import static dev.loramerge.fuse.FusedLoraTest.freshFuse;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.google.common.collect.Collections2;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.WeightTarget.Originals;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The path GPU weights take (fused by libtorch where they live, originals kept on the device or in
 * host memory), forced onto CPU arrays: the same bytes as the Java path, undone bit for bit in any
 * order, through a thousand hot-swap cycles, with no array left behind.
 */
class DeviceTargetTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 2, 1, 2);
  private static final LoraAdapter DETAIL = TinyLora.adapter("detail", 3, 3, 3);

  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F64", "F32", "F16"})
  void fusesToTheJavaPathsBytes(DType dtype) throws IOException {
    Map<String, TensorData> base = TinyLora.base(dtype, 7);
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> onDevice = arrays(manager, base);
      Map<String, NDArray> inJava = arrays(manager, base);
      LoraFuser fuser = LoraFuser.builder().merger(LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, -0.5).build()).scale(0.8).build();
      fuser.fuseInto(deviceTarget(onDevice, Originals.ON_DEVICE));
      fuser.fuseInto(WeightTarget.of(inJava));
      for (String name : base.keySet()) {
        assertThat(bytesOf(onDevice.get(name))).as("%s in %s, device path", name, dtype).isEqualTo(bytesOf(inJava.get(name)));
      }
      assertThat(bytesOf(onDevice.get("conv_in.weight"))).as("untouched weight").isEqualTo(base.get("conv_in.weight").bytes());
    }
  }

  @ParameterizedTest
  @EnumSource(Originals.class)
  void unfusesInAnyOrderBitForBit(Originals keptIn) throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 11);
    List<LoraAdapter> adapters = List.of(STYLE, SUBJECT, DETAIL);
    double[] weights = {0.9, 0.6, -1.3};
    for (List<Integer> order : Collections2.permutations(List.of(0, 1, 2))) {
      try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
        Map<String, NDArray> arrays = arrays(manager, base);
        int before = manager.getManagedArrays().size();
        WeightTarget target = deviceTarget(arrays, keptIn);
        List<FusedLora> fuses = new ArrayList<>();
        for (int i = 0; i < adapters.size(); i++) {
          fuses.add(LoraFuser.of(LoraMerger.builder().add(adapters.get(i), weights[i]).build()).fuseInto(target));
        }
        List<Integer> remaining = new ArrayList<>(List.of(0, 1, 2));
        for (int index : order) {
          fuses.get(index).unfuse();
          remaining.remove(Integer.valueOf(index));
          Map<String, ByteBuffer> expected = freshFuse(base, adapters, weights, remaining);
          for (String name : base.keySet()) {
            assertThat(bytesOf(arrays.get(name)))
                .as("%s after unfusing %s in order %s, originals %s (still fused: %s)", name, index, order, keptIn, remaining)
                .isEqualTo(expected.get(name));
          }
        }
        for (String name : base.keySet()) {
          assertThat(bytesOf(arrays.get(name))).as("%s restored, order %s", name, order).isEqualTo(base.get(name).bytes());
        }
        assertThat(manager.getManagedArrays().size()).as("arrays alive after every fuse is undone").isEqualTo(before);
      }
    }
  }

  /**
   * A backend's loop: fuse a request's LoRAs, render, unfuse, next request. Every weight must be
   * its original bytes at the end, with nothing left behind (users of other tools report images
   * degrading after repeated fuse and unfuse, from subtracting in floating point).
   */
  @Test
  void aThousandHotSwapsLeaveEveryWeightAsItWas() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 19);
    List<LoraFuser> requests = List.of(
        LoraFuser.of(LoraMerger.builder().add(STYLE, 0.8).build()),
        LoraFuser.of(LoraMerger.builder().add(SUBJECT, 1.1).add(DETAIL, 0.4).build()),
        LoraFuser.builder().merger(LoraMerger.builder().add(DETAIL, -0.7).build()).scale(1.3).build());
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = arrays(manager, base);
      int before = manager.getManagedArrays().size();
      WeightTarget target = deviceTarget(arrays, Originals.ON_DEVICE);
      for (int cycle = 0; cycle < 1000; cycle++) {
        FusedLora fused = requests.get(cycle % requests.size()).fuseInto(target);
        if (cycle % 250 == 0) {
          assertThat(bytesOf(arrays.get(TinyLora.KEYS[2].path() + ".weight")))
              .as("a fused weight in cycle %d", cycle)
              .isNotEqualTo(base.get(TinyLora.KEYS[2].path() + ".weight").bytes());
        }
        fused.unfuse();
      }
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s after 1000 cycles", name).isEqualTo(base.get(name).bytes());
      }
      assertThat(manager.getManagedArrays().size()).as("arrays alive after 1000 cycles").isEqualTo(before);
    }
  }

  @Test
  void aFailedFuseLeavesTheWeights() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 13);
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = arrays(manager, base);
      int before = manager.getManagedArrays().size();
      WeightTarget target = deviceTarget(arrays, Originals.ON_DEVICE);
      FusedLora kept = LoraFuser.of(LoraMerger.builder().add(SUBJECT, 0.5).build()).fuseInto(target);
      Map<String, ByteBuffer> fused = new LinkedHashMap<>();
      arrays.forEach((name, array) -> fused.put(name, bytesOf(array)));
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(STYLE, 1e5).build()).fuseInto(target))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("is beyond the range of F16");
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s after a failed fuse", name).isEqualTo(fused.get(name));
      }
      kept.unfuse();
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s restored after a failed fuse", name).isEqualTo(base.get(name).bytes());
      }
      assertThat(manager.getManagedArrays().size()).as("arrays alive at the end").isEqualTo(before);
    }
  }

  /**
   * A backend's loop with the adapters' factors kept on the device: each request's weights of the
   * same adapters give the bytes of a target that copies the factors every time, the factors are
   * kept once and read again (no arrays added after the first request), and trim() frees them.
   */
  @Test
  void keepsFactorsOnTheDeviceAndFusesToTheSameBytes() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 23);
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> keeping = arrays(manager, base);
      Map<String, NDArray> copying = arrays(manager, base);
      int before = manager.getManagedArrays().size();
      WeightTarget kept = WeightTarget.builder().weights(keeping).keepFactorsOnDevice(1 << 20).libtorchOnCpu().build();
      WeightTarget copied = deviceTarget(copying, Originals.ON_DEVICE);
      double[][] requests = {{0.8, -0.4}, {1.3, 0.2}, {-0.6, 0.9}, {0.8, -0.4}};
      int afterFirst = -1;
      for (double[] weights : requests) {
        LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(STYLE, weights[0]).add(SUBJECT, weights[1]).build());
        FusedLora fromKept = fuser.fuseInto(kept);
        FusedLora fromCopied = fuser.fuseInto(copied);
        for (String name : base.keySet()) {
          assertThat(bytesOf(keeping.get(name)))
              .as("%s fused with weights %s from factors kept on the device", name, java.util.Arrays.toString(weights))
              .isEqualTo(bytesOf(copying.get(name)));
        }
        fromKept.unfuse();
        fromCopied.unfuse();
        int alive = manager.getManagedArrays().size();
        if (afterFirst < 0) {
          afterFirst = alive;
          assertThat(alive).as("arrays alive after the first request: the kept factors").isGreaterThan(before);
        }
        assertThat(alive).as("arrays alive after a request with the factors already kept").isEqualTo(afterFirst);
      }
      kept.trim();
      assertThat(manager.getManagedArrays().size()).as("arrays alive after trim()").isEqualTo(before);
      for (String name : base.keySet()) {
        assertThat(bytesOf(keeping.get(name))).as("%s restored", name).isEqualTo(base.get(name).bytes());
      }
    }
  }

  private static WeightTarget deviceTarget(Map<String, NDArray> arrays, Originals keptIn) {
    return WeightTarget.builder().weights(arrays).originals(keptIn).libtorchOnCpu().build();
  }
}

package dev.loramerge.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorData;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * {@link AdapterKindsInMemoryTest}'s kinds fused by the device path ({@code libtorchOnCpu}): the
 * host path's bytes, every bit back after unfusing under and over a LoRA, and factors kept on the
 * device once.
 */
class TrialKindsOnDeviceTest {
  private static final LoraAdapter STYLE = AdapterKindsInMemoryTest.STYLE;

  @Test
  void unfusingKindsUnderAndOverALoraRestoresEveryBit() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 3);
    LoraAdapter kinds = AdapterKindsInMemoryTest.kinds();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = FusedLoraTest.arrays(manager, base);
      WeightTarget target = WeightTarget.builder().weights(arrays).libtorchOnCpu().build();
      FusedLora first = LoraFuser.of(LoraMerger.builder().add(kinds, 0.8).build()).fuseInto(target);
      try (NDManager host = NDManager.newBaseManager(Device.cpu())) {
        Map<String, NDArray> plain = FusedLoraTest.arrays(host, base);
        LoraFuser.of(LoraMerger.builder().add(kinds, 0.8).build()).fuseInto(WeightTarget.of(plain));
        for (String name : base.keySet()) {
          assertThat(FusedLoraTest.bytesOf(arrays.get(name))).as("%s as the host path fuses it", name).isEqualTo(FusedLoraTest.bytesOf(plain.get(name)));
        }
      }
      FusedLora second = LoraFuser.of(LoraMerger.builder().add(STYLE, 0.5).build()).fuseInto(target);
      first.unfuse();
      try (NDManager fresh = NDManager.newBaseManager(Device.cpu())) {
        Map<String, NDArray> only = FusedLoraTest.arrays(fresh, base);
        LoraFuser.of(LoraMerger.builder().add(STYLE, 0.5).build()).fuseInto(WeightTarget.of(only));
        for (String name : base.keySet()) {
          assertThat(FusedLoraTest.bytesOf(arrays.get(name)))
              .as("%s with only the LoRA left fused", name)
              .isEqualTo(FusedLoraTest.bytesOf(only.get(name)));
        }
      }
      second.unfuse();
      for (String name : base.keySet()) {
        assertThat(FusedLoraTest.bytesOf(arrays.get(name))).as("%s restored", name).isEqualTo(base.get(name).bytes());
      }
    }
  }

  /**
   * A Tucker LoCon's A is computed from its core each time it is asked for, so the factors a
   * target keeps on the device are found by the module, not by the tensors: kept once, read by
   * every later fuse, with the bytes of a target that copies them each time.
   */
  @Test
  void keepsATuckerLoConsFactorsOnTheDeviceOnce() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 5);
    LoraAdapter kinds = AdapterKindsInMemoryTest.kinds();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> keeping = FusedLoraTest.arrays(manager, base);
      Map<String, NDArray> copying = FusedLoraTest.arrays(manager, base);
      int before = manager.getManagedArrays().size();
      WeightTarget kept = WeightTarget.builder().weights(keeping).keepFactorsOnDevice(1 << 20).libtorchOnCpu().build();
      WeightTarget copied = WeightTarget.builder().weights(copying).libtorchOnCpu().build();
      int afterFirst = -1;
      for (double weight : new double[] {0.8, -0.3, 1.1}) {
        LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(kinds, weight).build());
        FusedLora fromKept = fuser.fuseInto(kept);
        FusedLora fromCopied = fuser.fuseInto(copied);
        for (String name : base.keySet()) {
          assertThat(FusedLoraTest.bytesOf(keeping.get(name)))
              .as("%s at weight %s from factors kept on the device", name, weight)
              .isEqualTo(FusedLoraTest.bytesOf(copying.get(name)));
        }
        fromKept.unfuse();
        fromCopied.unfuse();
        int alive = manager.getManagedArrays().size();
        afterFirst = afterFirst < 0 ? alive : afterFirst;
        assertThat(alive).as("arrays alive after the fuse at weight %s: the Tucker LoCon's factors kept once", weight)
            .isEqualTo(afterFirst)
            .isGreaterThan(before);
      }
      kept.trim();
      assertThat(manager.getManagedArrays().size()).as("arrays alive after trim()").isEqualTo(before);
    }
  }

  @Test
  void aDoraModuleCannotBeSubtractedNorFusedThroughAnotherMethod() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F32, 4);
    LoraAdapter kinds = AdapterKindsInMemoryTest.kinds();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = FusedLoraTest.arrays(manager, base);
      WeightTarget target = WeightTarget.builder().weights(arrays).libtorchOnCpu().build();
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(kinds, 1).build()).unfuseFrom(target))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("is a LoHa+DoRA, which cannot be subtracted");
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(kinds, 1).rank(2).build()).fuseInto(target))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("but the merger asks for an explicit rank");
      for (String name : base.keySet()) {
        assertThat(FusedLoraTest.bytesOf(arrays.get(name))).as("%s untouched after the refusals", name).isEqualTo(base.get(name).bytes());
      }
    }
  }
}

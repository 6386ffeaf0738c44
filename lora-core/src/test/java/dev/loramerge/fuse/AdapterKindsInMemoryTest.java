package dev.loramerge.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import dev.loramerge.AdapterKind;
import dev.loramerge.DType;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Other adapter kinds fused into in-memory weights go through the same ledger as LoRA: unfusing
 * them, before or after a LoRA fused on top, gives back every bit, DoRA included (its update
 * reads the weight, and the ledger replays the fuses still active on the originals).
 */
class AdapterKindsInMemoryTest {
  static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);

  private static TensorData seeded(Random random, double sd, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (sd * random.nextGaussian());
    }
    return TensorData.ofFloats(values, shape);
  }

  /** A LoHa with a PEFT DoRA magnitude, a LoKr and a Tucker LoCon on TinyLora's modules. */
  static LoraAdapter kinds() {
    Random random = new Random(9);
    LoraModule loha = LoraModule.ofKind(
        TinyLora.KEYS[0], AdapterKind.LOHA,
        Map.of("hada_w1_a", seeded(random, 0.3, 10, 2), "hada_w1_b", seeded(random, 0.3, 2, 12),
            "hada_w2_a", seeded(random, 0.3, 10, 2), "hada_w2_b", seeded(random, 0.3, 2, 12)), 2, Optional.empty());
    LoraModule lokr = LoraModule.ofKind(
        TinyLora.KEYS[1], AdapterKind.LOKR, Map.of("lokr_w1", seeded(random, 0.3, 3, 3), "lokr_w2", seeded(random, 0.1, 4, 4)),
        1, Optional.empty());
    LoraModule tucker = LoraModule.ofKind(
        TinyLora.KEYS[2], AdapterKind.LORA_TUCKER,
        Map.of("lora_down", seeded(random, 0.3, 2, 4, 1, 1), "lora_mid", seeded(random, 0.3, 2, 2, 3, 3),
            "lora_up", seeded(random, 0.3, 6, 2, 1, 1)), 2, Optional.empty());
    float[] magnitude = new float[10];
    for (int i = 0; i < magnitude.length; i++) {
      magnitude[i] = 0.5f + random.nextFloat();
    }
    return LoraAdapter.builder().name("kinds")
        .add(loha.withMagnitude(DoraMagnitude.peft(TensorData.ofFloats(magnitude, 10))))
        .add(lokr)
        .add(tucker)
        .build();
  }

  @Test
  void unfusingKindsUnderAndOverALoraRestoresEveryBit() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 3);
    LoraAdapter kinds = kinds();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = FusedLoraTest.arrays(manager, base);
      WeightTarget target = WeightTarget.of(arrays);
      FusedLora first = LoraFuser.of(LoraMerger.builder().add(kinds, 0.8).build()).fuseInto(target);
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
   * Two adapters on the same modules add their contributions, each computed on the base weight
   * as PEFT's forward does: W + (DoRA(W) − W) + w·ΔW for a DoRA module and a LoRA, W + w₁·ΔW₁ +
   * w₂·ΔW₂ otherwise (each module's own update is checked against LyCORIS's formulas in
   * lora-io's AdapterKindsFuseTest).
   */
  @Test
  void severalAdaptersOnAModuleAddTheirContributions() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F32, 6);
    LoraAdapter kinds = kinds();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = FusedLoraTest.arrays(manager, base);
      LoraFuser.of(LoraMerger.builder().add(kinds, 0.8).add(STYLE, 0.5).build()).fuseInto(WeightTarget.of(arrays));
      for (int k = 0; k < 2; k++) {
        String name = TinyLora.KEYS[k].path() + ".weight";
        double[] weight = base.get(name).toDoubleArray();
        LoraModule module = kinds.modules().get(TinyLora.KEYS[k]);
        double[] own = module.fusedF64(weight, 0.8);
        double[] style = STYLE.modules().get(TinyLora.KEYS[k]).deltaF64();
        ByteBuffer actual = FusedLoraTest.bytesOf(arrays.get(name));
        for (int i = 0; i < weight.length; i++) {
          double expected = weight[i] + ((own[i] - weight[i]) + 0.5 * style[i]);
          assertThat(actual.getFloat(i * 4)).as("%s[%d]", name, i).isCloseTo((float) expected, within(Math.ulp((float) expected)));
        }
      }
    }
  }

  @Test
  void aDoraModuleCannotBeSubtractedNorFusedThroughAnotherMethod() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F32, 4);
    LoraAdapter kinds = kinds();
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> arrays = FusedLoraTest.arrays(manager, base);
      WeightTarget target = WeightTarget.of(arrays);
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

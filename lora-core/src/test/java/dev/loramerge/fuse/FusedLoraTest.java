package dev.loramerge.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Parameter;
import ai.djl.training.ParameterStore;
import ai.djl.training.initializer.NormalInitializer;
import ai.djl.util.PairList;
import com.google.common.collect.Collections2;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.internal.fuse.FuseScratch;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Fusing into in-memory weights and DJL blocks, and undoing it bit for bit. */
class FusedLoraTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 2, 1, 2);
  private static final LoraAdapter DETAIL = TinyLora.adapter("detail", 3, 3, 3);

  @ParameterizedTest
  @EnumSource(value = DType.class, names = {"F32", "F16"})
  void fuseIsTheExactSumRoundedOnce(DType dtype) throws IOException {
    Map<String, TensorData> base = TinyLora.base(dtype, 7);
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      FusedLora fused =
          LoraFuser.builder().merger(LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, -0.5).build()).scale(0.8).fuseInto(WeightTarget.of(arrays));
      assertThat(fused.report().matched()).hasSize(TinyLora.KEYS.length);
      for (ModuleKey key : TinyLora.KEYS) {
        String name = key.path() + ".weight";
        double[] expected = base.get(name).toDoubleArray();
        double[] delta = TinyLora.weightedSum(key, new LoraAdapter[] {STYLE, SUBJECT}, new double[] {0.7, -0.5});
        for (int i = 0; i < expected.length; i++) {
          expected[i] += 0.8 * delta[i];
        }
        assertThat(bytesOf(arrays.get(name)))
            .as("%s fused into %s", name, dtype)
            .isEqualTo(TensorData.ofDoubles(expected, dtype, base.get(name).shape()).bytes());
      }
      assertThat(bytesOf(arrays.get("conv_in.weight"))).as("untouched weight").isEqualTo(base.get("conv_in.weight").bytes());
    }
  }

  @Test
  void unfusingInAnyOrderRestoresEveryBit() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 11);
    List<LoraAdapter> adapters = List.of(STYLE, SUBJECT, DETAIL);
    double[] weights = {0.9, 0.6, -1.3};
    for (List<Integer> order : Collections2.permutations(List.of(0, 1, 2))) {
      try (NDManager manager = NDManager.newBaseManager()) {
        Map<String, NDArray> arrays = arrays(manager, base);
        WeightTarget target = WeightTarget.of(arrays);
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
                .as("%s after unfusing %s in order %s (still fused: %s)", name, index, order, remaining)
                .isEqualTo(expected.get(name));
          }
        }
        for (String name : base.keySet()) {
          assertThat(bytesOf(arrays.get(name))).as("%s restored, order %s", name, order).isEqualTo(base.get(name).bytes());
        }
      }
    }
  }

  @Test
  void subtractingIsPeftsUnfuse() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F32, 5);
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      WeightTarget target = WeightTarget.of(arrays);
      LoraFuser merger = LoraFuser.of(LoraMerger.builder().add(STYLE, 1.0).build());
      merger.fuseInto(target);
      merger.unfuseFrom(target);
      for (String name : base.keySet()) {
        double[] restored = TensorData.of(DType.F32, base.get(name).shape(), bytesOf(arrays.get(name))).toDoubleArray();
        double[] original = base.get(name).toDoubleArray();
        for (int i = 0; i < original.length; i++) {
          assertThat(restored[i]).as("%s[%d] after subtracting", name, i).isCloseTo(original[i], org.assertj.core.data.Offset.offset(1e-5));
        }
      }
    }
  }

  @Test
  void overflowFailsNamingTheModuleAndLeavesTheTargetUntouched() {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 3);
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      WeightTarget target = WeightTarget.of(arrays);
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(STYLE, 1e5).build()).fuseInto(target))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("module 'unet.down_blocks.0")
          .hasMessageContaining("beyond the range of F16");
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s after a failed fuse", name).isEqualTo(base.get(name).bytes());
      }
    }
  }

  @Test
  void unmatchedModulesFailUnlessAllowed() throws IOException {
    Map<String, TensorData> base = new LinkedHashMap<>(TinyLora.base(DType.F32, 3));
    base.remove(TinyLora.KEYS[1].path() + ".weight");
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(STYLE, 1).build()).fuseInto(WeightTarget.of(arrays)))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("1 of 3 modules have no weight in the target")
          .hasMessageContaining(TinyLora.KEYS[1].toString())
          .as("names the library's setting, which the command translates to its flag")
          .hasMessageContaining("allowUnmatched(true) fuses the other 2");
      FusedLora fused = LoraFuser.builder().merger(LoraMerger.builder().add(STYLE, 1).build()).allowUnmatched(true).fuseInto(WeightTarget.of(arrays));
      assertThat(fused.report().unmatched()).containsExactly(TinyLora.KEYS[1]);
      assertThat(fused.report().matched()).hasSize(2);
    }
  }

  @Test
  void aWeightOfAnotherShapeIsAnArchitectureMismatch() {
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = new LinkedHashMap<>();
      for (ModuleKey key : TinyLora.KEYS) {
        arrays.put(key.path() + ".weight", manager.zeros(new Shape(7, 7)));
      }
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(STYLE, 1).build()).fuseInto(WeightTarget.of(arrays)))
          .isInstanceOf(LoraMergeException.class)
          .hasMessageContaining("base weight 'down_blocks.0.attentions.0.proj_in.weight' is F32[7, 7]")
          .hasMessageContaining("another architecture");
    }
  }

  @Test
  void fusesIntoABlockInPlace() throws IOException {
    try (NDManager manager = NDManager.newBaseManager()) {
      NamedBlock block = new NamedBlock();
      block.setInitializer(new NormalInitializer(0.1f), Parameter.Type.WEIGHT);
      block.initialize(manager, DataType.FLOAT32, new Shape(1));
      Map<String, double[]> before = new LinkedHashMap<>();
      List<NDArray> parameterArrays = new ArrayList<>();
      for (var parameter : block.getParameters()) {
        before.put(parameter.getKey(), parameter.getValue().getArray().toType(DataType.FLOAT64, false).toDoubleArray());
        parameterArrays.add(parameter.getValue().getArray());
      }
      LoraFuser.of(LoraMerger.builder().add(STYLE, 0.5).build()).fuseInto(WeightTarget.of(block));
      int index = 0;
      for (var parameter : block.getParameters()) {
        NDArray array = parameter.getValue().getArray();
        assertThat(array).as("parameter %s is the same array", parameter.getKey()).isSameAs(parameterArrays.get(index++));
        ModuleKey key = ModuleKey.of(Component.UNET, parameter.getKey().replace(".weight", ""));
        double[] delta = TinyLora.weightedSum(key, new LoraAdapter[] {STYLE}, new double[] {0.5});
        double[] expected = before.get(parameter.getKey()).clone();
        for (int i = 0; i < expected.length; i++) {
          expected[i] += delta[i];
        }
        assertThat(bytesOf(array)).as("parameter %s", parameter.getKey())
            .isEqualTo(TensorData.ofDoubles(expected, DType.F32, array.getShape().getShape()).bytes());
      }
    }
  }

  @Test
  void fusingLeaksNoArrays() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 3);
    try (NDManager manager = NDManager.newBaseManager()) {
      NDManager system = manager.getParentManager();
      Map<String, NDArray> arrays = arrays(manager, base);
      int before = system.getManagedArrays().size();
      int ownBefore = manager.getManagedArrays().size();
      WeightTarget target = WeightTarget.of(arrays);
      FusedLora fused = LoraFuser.of(LoraMerger.builder().add(STYLE, 0.5).add(DETAIL, 0.5).build()).fuseInto(target);
      fused.unfuse();
      // The system manager counts its children's arrays too, the weights' manager's among them.
      assertThat(system.getManagedArrays().size())
          .as("arrays alive in the system manager after the unfuse")
          .isEqualTo(before + TinyLora.KEYS.length);
      assertThat(manager.getManagedArrays().size())
          .as("arrays alive in the weights' manager after the unfuse: one spare per fused weight")
          .isEqualTo(ownBefore + TinyLora.KEYS.length);
      target.trim();
      assertThat(manager.getManagedArrays().size()).as("arrays alive in the weights' manager after trim()").isEqualTo(ownBefore);
      assertThat(system.getManagedArrays().size()).as("arrays alive in the system manager after trim()").isEqualTo(before);
    }
  }

  @Test
  void fusesAfterAnUnfuseReuseTheCopiesAndCopyTheWeightsAgain() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 13);
    Map<String, TensorData> changed = TinyLora.base(DType.F16, 14);
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      SpareCopies spares = SpareCopies.create();
      WeightTarget target = WeightTarget.of(arrays, spares);
      LoraFuser.of(LoraMerger.builder().add(STYLE, 0.8).build()).fuseInto(target).unfuse();
      int withSpares = manager.getManagedArrays().size();
      // The weights change outside the target between fuses: a spare holds stale values.
      changed.forEach((name, tensor) -> arrays.get(name).set(tensor.bytes().duplicate()));
      // A target made per fuse with the same spares finds the copies the first one left.
      FusedLora fused = LoraFuser.of(LoraMerger.builder().add(SUBJECT, -0.6).build()).fuseInto(WeightTarget.of(arrays, spares));
      assertThat(manager.getManagedArrays().size())
          .as("arrays alive while a second target's fuse is active")
          .isEqualTo(withSpares);
      Map<String, ByteBuffer> expected = freshFuse(changed, List.of(SUBJECT), new double[] {-0.6}, List.of(0));
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s fused over the changed weights", name).isEqualTo(expected.get(name));
      }
      fused.unfuse();
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s restored to the changed weights", name).isEqualTo(changed.get(name).bytes());
      }
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(STYLE, 1e5).build()).fuseInto(target)).isInstanceOf(LoraMergeException.class);
      assertThat(manager.getManagedArrays().size()).as("arrays alive after a failed fuse").isEqualTo(withSpares);
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s after a failed fuse", name).isEqualTo(changed.get(name).bytes());
      }
      assertThat(target.toString()).contains("spares=" + TinyLora.KEYS.length);
      WeightTarget.of(arrays, spares).trim();
      assertThat(manager.getManagedArrays().size())
          .as("arrays alive after trim() on another target over the same arrays")
          .isEqualTo(withSpares - TinyLora.KEYS.length);
      assertThat(target.toString()).contains("spares=0");
    }
  }

  @Test
  void cpuWeightsLaidOutContiguouslyAreFusedInTheirOwnMemory() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 17);
    Map<String, ByteBuffer> expected = freshFuse(base, List.of(STYLE), new double[] {0.9}, List.of(0));
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      // Views of the weights' memory taken before the fuse: NDArray.set would give the weights
      // new memory, and these would keep the old values.
      Map<String, ByteBuffer> memory = new LinkedHashMap<>();
      arrays.forEach((name, array) -> memory.put(name, array.toByteBuffer(true)));
      WeightTarget target = WeightTarget.of(arrays);
      for (int round = 0; round < 2; round++) {
        FusedLora fused = LoraFuser.of(LoraMerger.builder().add(STYLE, 0.9).build()).fuseInto(target);
        for (ModuleKey key : TinyLora.KEYS) {
          String name = key.path() + ".weight";
          assertThat(expected.get(name)).as("%s changes when fused", name).isNotEqualTo(base.get(name).bytes());
          assertThat(memory.get(name).duplicate().clear())
              .as("%s's memory as it was before fuse %d, after it", name, round)
              .isEqualTo(expected.get(name));
        }
        fused.unfuse();
        for (String name : base.keySet()) {
          assertThat(memory.get(name).duplicate().clear())
              .as("%s's memory after unfuse %d", name, round)
              .isEqualTo(base.get(name).bytes());
        }
      }
      target.trim();
    }
  }

  @Test
  void aWeightThatIsATransposedViewIsFusedAndRestored() throws IOException {
    Map<String, TensorData> base = TinyLora.base(DType.F16, 19);
    Map<String, ByteBuffer> expected = freshFuse(base, List.of(STYLE, DETAIL), new double[] {0.8, -0.4}, List.of(0, 1));
    String viewed = TinyLora.KEYS[1].path() + ".weight";
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      // The same values, held as the transpose of a contiguous array: its direct view is a copy.
      NDArray transposed = arrays.get(viewed).transpose();
      NDArray storage = manager.create(transposed.toByteBuffer(), transposed.getShape(), transposed.getDataType());
      arrays.put(viewed, storage.transpose());
      assertThat(bytesOf(arrays.get(viewed))).as("the transposed view's values").isEqualTo(base.get(viewed).bytes());
      WeightTarget target = WeightTarget.of(arrays);
      FusedLora style = LoraFuser.of(LoraMerger.builder().add(STYLE, 0.8).build()).fuseInto(target);
      FusedLora detail = LoraFuser.of(LoraMerger.builder().add(DETAIL, -0.4).build()).fuseInto(target);
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s fused", name).isEqualTo(expected.get(name));
      }
      style.unfuse();
      detail.unfuse();
      for (String name : base.keySet()) {
        assertThat(bytesOf(arrays.get(name))).as("%s restored", name).isEqualTo(base.get(name).bytes());
      }
    }
  }

  @Test
  void aFuseThatChangesNoValueNeverChangesAByteEvenForAnInstant() throws Exception {
    LoraAdapter.Builder zero = LoraAdapter.builder().name("zero");
    for (LoraModule module : STYLE.modules().values()) {
      TensorData up = TensorData.ofFloats(new float[Math.toIntExact(TensorData.numel(module.up().shape()))], module.up().shape());
      zero.add(LoraModule.of(module.key(), module.down(), up, 8));
    }
    LoraFuser merger = LoraFuser.of(LoraMerger.builder().add(zero.build(), 1).build());
    Map<String, TensorData> base = TinyLora.base(DType.F16, 23);
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      Map<String, ByteBuffer> memory = new LinkedHashMap<>();
      arrays.forEach((name, array) -> memory.put(name, array.toByteBuffer(true)));
      AtomicBoolean fusing = new AtomicBoolean(true);
      List<String> changes = new CopyOnWriteArrayList<>();
      AtomicLong reads = new AtomicLong();
      Thread reader = new Thread(() -> {
        while (fusing.get()) {
          memory.forEach((name, bytes) -> {
            if (!bytes.duplicate().clear().equals(base.get(name).bytes())) {
              changes.add(name);
            }
          });
          reads.incrementAndGet();
        }
      });
      reader.start();
      try {
        // Each new target learns anew how its weights are written.
        for (int round = 0; round < 300; round++) {
          merger.fuseInto(WeightTarget.of(arrays)).unfuse();
        }
      } finally {
        fusing.set(false);
        reader.join();
      }
      assertThat(reads.get()).as("passes of the reader over the weights").isPositive();
      assertThat(changes).as("weights seen with a byte other than their own while fused with a zero update").isEmpty();
    }
  }

  @Test
  void roundingFixesTiesThatFloat32Creates() {
    // 1 + 2⁻¹¹ + 2⁻³⁰ is just above the fp16 tie between 1 and 1 + 2⁻¹⁰; float32 rounds it onto
    // the tie, and fp16's ties-to-even would then give 1. Rounded once it is 1 + 2⁻¹⁰.
    try (NDManager manager = NDManager.newBaseManager()) {
      ByteBuffer weight = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
      weight.putShort(0, FloatFormats.toFloat16(1)).putShort(2, FloatFormats.toFloat16(-1));
      double bump = Math.scalb(1.0, -11) + Math.scalb(1.0, -30);
      ByteBuffer fused = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
      Fusion.fuse(
          new FuseScratch(), () -> manager, weight, DType.F16, new long[] {2, 1}, new double[] {bump, -bump}, new double[] {1}, 1, fused,
          DType.F16, "test");
      assertThat(fused.getShort(0)).isEqualTo(FloatFormats.toFloat16(1 + bump));
      assertThat(fused.getShort(2)).isEqualTo(FloatFormats.toFloat16(-1 - bump));
      assertThat(FloatFormats.toFloat16(1 + bump)).isNotEqualTo(FloatFormats.toFloat16(1.0));
    }
  }

  static Map<String, ByteBuffer> freshFuse(
      Map<String, TensorData> base, List<LoraAdapter> adapters, double[] weights, List<Integer> which) throws IOException {
    try (NDManager manager = NDManager.newBaseManager()) {
      Map<String, NDArray> arrays = arrays(manager, base);
      WeightTarget target = WeightTarget.of(arrays);
      for (int index : which) {
        LoraFuser.of(LoraMerger.builder().add(adapters.get(index), weights[index]).build()).fuseInto(target);
      }
      Map<String, ByteBuffer> result = new LinkedHashMap<>();
      arrays.forEach((name, array) -> result.put(name, bytesOf(array)));
      return result;
    }
  }

  static Map<String, NDArray> arrays(NDManager manager, Map<String, TensorData> base) {
    Map<String, NDArray> arrays = new LinkedHashMap<>();
    base.forEach(
        (name, tensor) -> {
          ByteBuffer copy = ByteBuffer.allocateDirect(Math.toIntExact(tensor.byteSize())).order(ByteOrder.nativeOrder());
          copy.put(tensor.bytes().duplicate()).flip();
          arrays.put(name, manager.create(copy, new Shape(tensor.shape()), Fusion.dataTypeOf(tensor.dtype())));
        });
    return arrays;
  }

  static ByteBuffer bytesOf(NDArray array) {
    ByteBuffer bytes = array.toByteBuffer();
    ByteBuffer copy = ByteBuffer.allocate(bytes.remaining()).order(ByteOrder.LITTLE_ENDIAN);
    copy.put(bytes).flip();
    return copy;
  }

  /** A block whose parameters are named as a TorchScript UNet names them. */
  private static final class NamedBlock extends AbstractBlock {
    NamedBlock() {
      LoraAdapter shapes = TinyLora.adapter("shapes", 1, 1, 1);
      for (ModuleKey key : TinyLora.KEYS) {
        addParameter(
            Parameter.builder()
                .setName(key.path() + ".weight")
                .setType(Parameter.Type.WEIGHT)
                .optShape(new Shape(shapes.modules().get(key).weightShape()))
                .build());
      }
    }

    @Override
    protected NDList forwardInternal(
        ParameterStore parameterStore, NDList inputs, boolean training, PairList<String, Object> params) {
      return inputs;
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
      return inputShapes;
    }
  }
}

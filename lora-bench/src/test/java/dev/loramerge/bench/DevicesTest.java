package dev.loramerge.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import java.nio.ByteBuffer;
import java.util.Map;
import org.junit.jupiter.api.Test;

class DevicesTest {
  private static ByteBuffer bytes(int count, int seed) {
    ByteBuffer buffer = ByteBuffer.allocate(count);
    for (int i = 0; i < count; i++) {
      buffer.put(i, (byte) (31 * i + seed));
    }
    return buffer;
  }

  @Test
  void differingElementsCountsElementsNotBytes() {
    ByteBuffer original = bytes(20, 5);
    ByteBuffer changed = bytes(20, 5);
    // fp16 elements 3 (both bytes), 7 (its low byte) and 9 (its high byte, the buffer's last).
    changed.put(6, (byte) ~changed.get(6)).put(7, (byte) ~changed.get(7));
    changed.put(14, (byte) ~changed.get(14));
    changed.put(19, (byte) ~changed.get(19));
    assertThat(Devices.differingElements(original, changed, 2)).as("2-byte elements").isEqualTo(3);
    assertThat(Devices.differingElements(original, changed, 4)).as("4-byte elements 1, 3 and 4").isEqualTo(3);
    assertThat(Devices.differingElements(original, changed, 1)).as("single bytes").isEqualTo(4);
    assertThat(Devices.differingElements(original, bytes(20, 5), 2)).isZero();
    assertThat(original.position()).as("the buffers' positions are left alone").isZero();
  }

  @Test
  void differingElementsCountsFromEachBuffersPosition() {
    ByteBuffer left = bytes(12, 1).position(4);
    ByteBuffer right = ByteBuffer.allocate(10).put(2, bytes(12, 1), 4, 8).position(2);
    assertThat(Devices.differingElements(left, right, 4)).isZero();
    right.put(9, (byte) 0x7f);
    assertThat(Devices.differingElements(left, right, 4)).as("the last element of the views").isEqualTo(1);
    assertThatThrownBy(() -> Devices.differingElements(left, ByteBuffer.allocate(7), 4))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("8 bytes against 7");
  }

  @Test
  void arraysCompareBitForBitSoZerosOfEitherSignDiffer() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray a = manager.create(new float[] {0f, 1f, Float.NaN, 2f}, new Shape(2, 2));
      NDArray b = manager.create(new float[] {-0f, 1f, Float.NaN, 2.0000002f}, new Shape(2, 2));
      assertThat(Devices.differingElements(a, b)).as("-0 against 0, and the last ulp; equal NaNs are equal bits").isEqualTo(2);
      assertThatThrownBy(() -> Devices.differingElements(a, b.reshape(4)))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("float32 (2, 2) against float32 (4)");
    }
  }

  @Test
  void arraysCompareInTheirLogicalOrderWhateverTheirLayout() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray rows = manager.create(new float[] {1, 2, 3, 4, 5, 6}, new Shape(2, 3));
      NDArray transposed = rows.transpose();
      NDArray laidOut = manager.create(new float[] {1, 4, 2, 5, 3, 6}, new Shape(3, 2));
      assertThat(Devices.differingElements(transposed, laidOut)).as("a transposed view against its values row by row").isZero();
      laidOut.set(new NDIndex("2, 0"), 7f);
      assertThat(Devices.differingElements(transposed, laidOut)).as("element (2, 0) changed").isEqualTo(1);
    }
  }

  @Test
  void comparingLeavesNoArraysBehind() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray a = manager.create(new float[] {1, 2, 3});
      NDArray b = manager.create(new float[] {1, 2, 4});
      NDArray transposed = manager.create(new float[] {1, 2, 3, 4}, new Shape(2, 2)).transpose();
      NDManager system = manager.getParentManager();
      int before = system.getManagedArrays().size();
      assertThat(Devices.differingElements(a, b)).isEqualTo(1);
      assertThat(Devices.differingElements(transposed, transposed)).isZero();
      // The system manager counts its children's arrays too.
      assertThat(system.getManagedArrays()).as("arrays alive after the comparisons, the host copies' closed").hasSize(before);
    }
  }

  @Test
  void compareCountsElementsAndWeightsThatDifferByName() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> weights = Map.of(
          "a", manager.create(new float[] {1, 2, 3}), "b", manager.create(new float[] {4, 5}), "c", manager.create(new float[] {6}));
      Map<String, NDArray> others = Map.of(
          "c", manager.create(new float[] {6}), "b", manager.create(new float[] {4, -5}), "a", manager.create(new float[] {0, 2, 0}));
      assertThat(Devices.compare(weights, others)).isEqualTo(new Devices.Comparison(6, 3, 2));
      assertThat(Devices.compare(weights, weights).plus(Devices.compare(weights, others)))
          .isEqualTo(new Devices.Comparison(12, 3, 2));
    }
  }

  @Test
  void copyToIsIndependentAndOwnedByTheTargetManager() {
    try (NDManager source = NDManager.newBaseManager(Device.cpu())) {
      NDArray array = source.create(new float[] {1, 2, 3});
      NDArray copy;
      try (NDManager target = NDManager.newBaseManager(Device.cpu())) {
        copy = Devices.copyTo(array, target);
        array.addi(1);
        assertThat(copy.toFloatArray()).containsExactly(1, 2, 3);
        assertThat(copy.getManager()).isSameAs(target);
      }
      assertThat(copy.isReleased()).as("closed with the target's manager").isTrue();
      assertThat(array.isReleased()).isFalse();
    }
  }

  @Test
  void parseNamesTheDeviceOrSaysWhatIsWrong() {
    assertThat(Devices.parse("cpu", "hint")).isEqualTo(Device.cpu());
    assertThatThrownBy(() -> Devices.parse("tpu", "hint"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("unknown device 'tpu'; expected cpu or gpu");
  }

  @Test
  void gpuWithoutOneStopsWithTheHint() {
    assumeTrue(Engine.getInstance().getGpuCount() == 0, "a GPU is visible here");
    assertThatThrownBy(() -> Devices.parse("gpu", "run with -p device=cpu"))
        .isInstanceOf(IllegalStateException.class)
        .hasMessageStartingWith("no GPU visible to DJL (PyTorch ")
        .hasMessageContaining("Engine.getGpuCount() == 0")
        .hasMessageEndingWith("; run with -p device=cpu");
    assertThatThrownBy(() -> KernelParams.device("gpu")).isInstanceOf(IllegalStateException.class);
  }

  @Test
  void memoryIsReportedOnlyForGpus() {
    assertThat(Devices.memoryUsed(Device.cpu())).isEmpty();
  }
}

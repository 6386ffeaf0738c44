package dev.loramerge.internal.fuse;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The copies' CPU path (libtorch's); the CUDA one is checked by the GPU stages of gpu/device-run.sh. */
class DeviceCopiesTest {
  @Test
  void copiesEverySourceIntoItsTarget() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      List<NDArray> sources = List.of(manager.arange(0f, 6f, 1f, DataType.FLOAT32).reshape(2, 3), manager.ones(new Shape(4), DataType.FLOAT16));
      List<NDArray> targets = List.of(manager.zeros(new Shape(2, 3), DataType.FLOAT32), manager.zeros(new Shape(4), DataType.FLOAT16));
      DeviceCopies.copy(sources, targets);
      for (int i = 0; i < sources.size(); i++) {
        assertThat(targets.get(i).toByteBuffer()).as("target %d", i).isEqualTo(sources.get(i).toByteBuffer());
      }
      assertThatThrownBy(() -> DeviceCopies.copy(sources, targets.subList(0, 1))).hasMessage("2 sources for 1 targets");
    }
  }

  @Test
  void duplicatesAreIndependentCopiesInTheArraysManager() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray array = manager.arange(0f, 4f, 1f, DataType.FLOAT32);
      float[] before = array.toFloatArray();
      NDArray copy = DeviceCopies.duplicates(List.of(array)).get(0);
      array.set(new ai.djl.ndarray.index.NDIndex("0"), 9f);
      assertThat(copy.toFloatArray()).as("the copy after its source changed").containsExactly(before);
      assertThat(copy.getManager()).as("the copy's manager").isSameAs(manager);
    }
  }
}

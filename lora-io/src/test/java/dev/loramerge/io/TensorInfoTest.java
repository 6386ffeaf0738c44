package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.DType;
import org.junit.jupiter.api.Test;

class TensorInfoTest {
  @Test
  void shapeIsCopiedInAndOut() {
    long[] shape = {4, 320};
    TensorInfo info = new TensorInfo("down", DType.F16, shape, 0, 2560);
    shape[0] = 5;
    info.shape()[1] = 7;
    assertThat(info.shape()).containsExactly(4, 320);
    assertThat(info.byteSize()).isEqualTo(2560);
  }

  @Test
  void equalityComparesShapesByValue() {
    TensorInfo info = new TensorInfo("down", DType.F16, new long[] {4, 320}, 0, 2560);
    assertThat(info)
        .isEqualTo(new TensorInfo("down", DType.F16, new long[] {4, 320}, 0, 2560))
        .hasSameHashCodeAs(new TensorInfo("down", DType.F16, new long[] {4, 320}, 0, 2560))
        .isNotEqualTo(new TensorInfo("down", DType.F16, new long[] {320, 4}, 0, 2560))
        .isNotEqualTo(new TensorInfo("down", DType.BF16, new long[] {4, 320}, 0, 2560))
        .isNotEqualTo(new TensorInfo("up", DType.F16, new long[] {4, 320}, 0, 2560))
        .isNotEqualTo(new TensorInfo("down", DType.F16, new long[] {4, 320}, 8, 2568));
    assertThat(info)
        .hasToString("TensorInfo[name=down, dtype=F16, shape=[4, 320], begin=0, end=2560]");
  }

  @Test
  void rejectsInconsistentEntries() {
    assertThatThrownBy(() -> new TensorInfo("down", DType.F16, new long[] {4, -1}, 0, 0))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("tensor 'down' has a negative dimension in [4, -1]");
    assertThatThrownBy(() -> new TensorInfo("down", DType.F16, new long[] {2}, 8, 4))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("tensor 'down' data_offsets [8, 4) are not 0 <= begin <= end");
    assertThatThrownBy(() -> new TensorInfo("down", DType.F16, new long[] {4, 320}, 0, 1000))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage(
            "tensor 'down' data_offsets [0, 1000) hold 1000 bytes but F16 [4, 320] needs 2560"
                + " bytes");
    assertThatThrownBy(() -> new TensorInfo("down", DType.F64, new long[] {1L << 61, 4}, 0, 0))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("tensor 'down' size of F64 [2305843009213693952, 4] overflows 64 bits");
  }
}

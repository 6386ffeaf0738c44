package dev.loramerge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class TensorSpecTest {
  @Test
  void shapeIsCopiedInAndOut() {
    long[] shape = {4, 320};
    TensorSpec spec = new TensorSpec("down", DType.F16, shape);
    shape[0] = 5;
    spec.shape()[1] = 7;
    assertThat(spec.shape()).as("neither the caller's array nor the returned copy reach the spec").containsExactly(4, 320);
    assertThat(spec.numel()).isEqualTo(1280);
    assertThat(spec.byteSize()).isEqualTo(2560);
  }

  @Test
  void equalityComparesShapesByValue() {
    TensorSpec spec = new TensorSpec("down", DType.F16, new long[] {4, 320});
    assertThat(spec)
        .isEqualTo(new TensorSpec("down", DType.F16, new long[] {4, 320}))
        .hasSameHashCodeAs(new TensorSpec("down", DType.F16, new long[] {4, 320}))
        .isNotEqualTo(new TensorSpec("down", DType.F16, new long[] {320, 4}))
        .isNotEqualTo(new TensorSpec("down", DType.BF16, new long[] {4, 320}))
        .isNotEqualTo(new TensorSpec("up", DType.F16, new long[] {4, 320}));
    assertThat(spec).hasToString("TensorSpec[name=down, dtype=F16, shape=[4, 320]]");
  }

  @Test
  void ofTakesTheTensorsDtypeAndShape() {
    TensorData tensor = TensorData.ofFloats(new float[6], 2, 3);
    assertThat(TensorSpec.of("w", tensor))
        .as("the spec of a 2×3 float32 tensor")
        .isEqualTo(new TensorSpec("w", DType.F32, new long[] {2, 3}));
  }

  @Test
  void scalarsAndEmptyTensors() {
    assertThat(new TensorSpec("scalar", DType.F64, new long[0]).byteSize()).as("a scalar holds one element").isEqualTo(8);
    assertThat(new TensorSpec("empty", DType.F32, new long[] {0, 3}).byteSize()).as("a zero dimension holds nothing").isZero();
  }

  @Test
  void rejectsShapesWithoutAByteSize() {
    assertThatThrownBy(() -> new TensorSpec("down", DType.F16, new long[] {4, -1}))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("tensor 'down' has a negative dimension in [4, -1]");
    assertThatThrownBy(() -> new TensorSpec("down", DType.F64, new long[] {1L << 61, 4}))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("tensor 'down' size of F64 [2305843009213693952, 4] overflows 64 bits");
    assertThatThrownBy(() -> new TensorSpec("huge", DType.F32, new long[] {1L << 62, 2}))
        .as("the element count fits but the bytes do not")
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("tensor 'huge' size of F32 [4611686018427387904, 2] overflows 64 bits");
  }
}

package dev.loramerge.merge.spi;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import org.junit.jupiter.api.Test;

class ModuleUpdateTest {
  @Test
  void eachFormKnowsItsRank() {
    assertThat(new ModuleUpdate.Factors(new float[6], new float[8], 2).rank()).isEqualTo(2);
    assertThat(new ModuleUpdate.DoubleFactors(new double[6], new double[8], 2).rank()).isEqualTo(2);
    assertThat(new ModuleUpdate.Encoded(TensorData.ofFloats(new float[6], 3, 2), TensorData.ofFloats(new float[8], 2, 4)).rank())
        .isEqualTo(2);
    ModuleUpdate.Dense dense = new ModuleUpdate.Dense(new float[12], 4);
    assertThat(dense.rows()).isEqualTo(3);
    assertThat(dense.rank()).as("the smaller side of a 3×4 update").isEqualTo(3);
  }

  @Test
  void rejectsArraysThatDoNotMakeTheUpdate() {
    assertThatThrownBy(() -> new ModuleUpdate.Factors(new float[6], new float[7], 2))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("6 up values and 7 down values do not make factors of rank 2");
    assertThatThrownBy(() -> new ModuleUpdate.DoubleFactors(new double[6], new double[8], 0))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("rank must be positive, got 0");
    assertThatThrownBy(() -> new ModuleUpdate.Encoded(TensorData.ofFloats(new float[6], 3, 2), TensorData.ofFloats(new float[9], 3, 3)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("factors [3, 2] and [3, 3] do not multiply");
    assertThatThrownBy(
            () -> new ModuleUpdate.Encoded(
                TensorData.ofFloats(new float[6], 3, 2), TensorData.ofFloats(new float[8], DType.F16, 2, 4)))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("factors of F32 and F16");
    assertThatThrownBy(() -> new ModuleUpdate.Dense(new float[10], 4))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("10 values do not make rows of 4");
  }
}

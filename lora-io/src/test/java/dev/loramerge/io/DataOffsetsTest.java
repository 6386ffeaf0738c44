package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class DataOffsetsTest {
  @Test
  void byteSizeIsTheRangesLength() {
    assertThat(new DataOffsets(8, 2568).byteSize()).as("[8, 2568)").isEqualTo(2560);
    assertThat(new DataOffsets(4, 4).byteSize()).as("an empty tensor's range").isZero();
  }

  @Test
  void rejectsRangesThatDoNotRunForward() {
    assertThatThrownBy(() -> new DataOffsets(8, 4))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("data_offsets [8, 4) are not 0 <= begin <= end");
    assertThatThrownBy(() -> new DataOffsets(-1, 4))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("data_offsets [-1, 4) are not 0 <= begin <= end");
  }
}

package dev.loramerge.internal.fuse;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class FusionTest {
  @Test
  void findsTheFirstNonFiniteHalfWhereverItIs() {
    SplittableRandom random = new SplittableRandom(4);
    for (DType dtype : new DType[] {DType.F16, DType.BF16}) {
      short infinity = (short) (dtype == DType.F16 ? 0x7c00 : 0x7f80);
      short nan = (short) (dtype == DType.F16 ? 0xfe01 : 0xffc1);
      for (int count : new int[] {1, 31, 64, 1000, 4099, 20000}) {
        // Before, inside and after the vector blocks, and a second one later that must not win.
        int[] positions = {0, count / 3, count - 1, count * 9 / 10, -1};
        for (int position : positions) {
          // A leading element the check must skip: the buffer's position is 2 bytes in.
          ByteBuffer bytes = ByteBuffer.allocate(2 + count * 2).order(ByteOrder.LITTLE_ENDIAN);
          bytes.putShort(0, infinity);
          for (int i = 0; i < count; i++) {
            bytes.putShort(2 + i * 2, (short) (random.nextInt(0x7000) | (random.nextBoolean() ? 0x8000 : 0)));
          }
          if (position >= 0) {
            bytes.putShort(2 + position * 2, position % 2 == 0 ? infinity : nan);
            if (position + 5 < count) {
              bytes.putShort(2 + (position + 5) * 2, infinity);
            }
          }
          ByteBuffer view = bytes.position(2).slice().asReadOnlyBuffer();
          ByteBuffer offset = bytes.duplicate().position(2);
          for (boolean vectorized : new boolean[] {true, false}) {
            assertThat(Fusion.firstNonFinite(view, dtype, vectorized))
                .as("%s, %d elements, at %d, vectorized %s", dtype, count, position, vectorized)
                .isEqualTo(position);
            assertThat(Fusion.firstNonFinite(offset, dtype, vectorized))
                .as("%s, %d elements from byte 2, at %d, vectorized %s", dtype, count, position, vectorized)
                .isEqualTo(position);
          }
        }
      }
    }
  }
}

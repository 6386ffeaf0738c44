package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.Optional;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class StagingRingTest {
  @Test
  void regionsFollowEachOtherAndWrapToTheStartOnceTheOldestAreFreed() {
    StagingRing ring = new StagingRing(100);
    ByteBuffer first = ring.take(40).orElseThrow();
    ByteBuffer second = ring.take(40).orElseThrow();
    assertThat(ring.take(30)).as("30 bytes beside 80 taken of 100").isEmpty();
    ring.free();
    ByteBuffer third = ring.take(30).orElseThrow();
    assertThat(ring.take(11)).as("11 bytes between the wrapped region's end (30) and the oldest (40)").isEmpty();
    ByteBuffer fourth = ring.take(10).orElseThrow();
    assertThat(ring.taken()).isEqualTo(3);
    for (ByteBuffer region : new ByteBuffer[] {first, second, third, fourth}) {
      assertThat(region.order()).isEqualTo(java.nio.ByteOrder.LITTLE_ENDIAN);
      assertThat(region.position()).isZero();
    }
    assertThat(new int[] {second.capacity(), third.capacity(), fourth.capacity()}).containsExactly(40, 30, 10);
  }

  @Test
  void aRegionIsAlwaysTakenWhenNoneIsAndNeverOverlapsOneStillTaken() {
    SplittableRandom random = new SplittableRandom(5);
    StagingRing ring = new StagingRing(1000);
    ArrayDeque<ByteBuffer> taken = new ArrayDeque<>();
    ArrayDeque<Byte> tags = new ArrayDeque<>();
    byte tag = 0;
    for (int step = 0; step < 20_000; step++) {
      if (taken.isEmpty() || random.nextInt(3) > 0) {
        int size = random.nextInt(1001);
        Optional<ByteBuffer> region = ring.take(size);
        assertThat(region.isPresent() || !taken.isEmpty()).as("step %s: %s bytes into an empty ring", step, size).isTrue();
        if (region.isPresent()) {
          assertThat(region.get().remaining()).isEqualTo(size);
          tag++;
          while (region.get().hasRemaining()) {
            region.get().put(tag);
          }
          taken.addLast(region.get().flip());
          tags.addLast(tag);
        }
      } else {
        ByteBuffer oldest = taken.removeFirst();
        byte expected = tags.removeFirst();
        for (int i = 0; i < oldest.limit(); i++) {
          assertThat(oldest.get(i)).as("step %s: byte %s of the oldest region, written over by a later one", step, i).isEqualTo(expected);
        }
        ring.free();
      }
      assertThat(ring.taken()).isEqualTo(taken.size());
    }
  }

  @Test
  void theCapacityHoldsEverySizeWithinTheBudgetOrThreeOfTheLargest() {
    long[] tens = {10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
    assertThat(StagingRing.capacityFor(tens, 1000)).as("all fit the budget").isEqualTo(100);
    assertThat(StagingRing.capacityFor(tens, 40)).as("the budget").isEqualTo(40);
    assertThat(StagingRing.capacityFor(tens, 20)).as("three of the largest, over the budget").isEqualTo(30);
    assertThat(StagingRing.capacityFor(new long[] {5, 200}, 40)).as("all, under three of the largest").isEqualTo(205);
    assertThat(StagingRing.capacityFor(new long[0], 40)).as("nothing to stage").isEqualTo(1);
  }

  @Test
  void misuseIsRefused() {
    StagingRing ring = new StagingRing(10);
    assertThatThrownBy(() -> ring.take(11)).hasMessage("11 bytes do not fit in a staging ring of 10");
    assertThatThrownBy(ring::free).hasMessage("no staging region is taken");
  }
}

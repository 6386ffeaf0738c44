package dev.loramerge.merge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/** kohya resize_lora's dynamic ranks, worked by hand. */
class RankRuleTest {
  private static final double[] SIGMA = {10, 5, 2, 1, 0.5, 0.1};

  @Test
  void fixedIsTheCap() {
    assertThat(RankRule.fixed().rank(SIGMA, 4)).isEqualTo(4);
  }

  @Test
  void svRatioKeepsValuesAboveTheLargestOverTheRatio() {
    // S > 10/4 = 2.5: two values; kohya then adds one.
    assertThat(RankRule.svRatio(4).rank(SIGMA, 8)).isEqualTo(3);
    assertThat(RankRule.svRatio(4).rank(SIGMA, 2)).as("capped").isEqualTo(2);
  }

  @Test
  void svCumulativeCountsTheRunningSum() {
    // cumsum/sum = 10/18.6 = 0.538, 0.806, 0.914, ...: 0.8 is reached at index 1, +1, +1.
    assertThat(RankRule.svCumulative(0.8).rank(SIGMA, 8)).isEqualTo(3);
  }

  @Test
  void svFroCountsTheSquaredNorm() {
    // S² = 100, 25, 4, 1, .25, .01 (sum 130.26): cumulative 0.768, 0.960, ...; 0.9² = 0.81 at index 1.
    assertThat(RankRule.svFro(0.9).rank(SIGMA, 8)).isEqualTo(3);
  }

  @Test
  void aVanishingModuleGetsRankOne() {
    assertThat(RankRule.svRatio(2).rank(new double[] {1e-9, 0}, 8)).isEqualTo(1);
  }

  @Test
  void rejectsMeaninglessParameters() {
    assertThatThrownBy(() -> RankRule.named("sv_magic", 1))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("unknown dynamic rank method 'sv_magic'; expected sv_ratio, sv_cumulative or sv_fro");
    assertThatThrownBy(() -> RankRule.svFro(1.5)).hasMessage("sv_fro must be in (0, 1], got 1.5");
  }
}

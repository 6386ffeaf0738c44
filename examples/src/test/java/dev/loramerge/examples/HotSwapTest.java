package dev.loramerge.examples;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/** The example on the repository's PEFT 0.21 test data, as CI runs it. */
class HotSwapTest {
  private static final Path DATA = Path.of(System.getProperty("loramerge.testdata"), "peft-0.21");

  @Test
  void aHundredHotSwapsLeaveEveryWeightAsItWas() throws IOException {
    HotSwap.Outcome outcome =
        HotSwap.run(
            DATA.resolve("base.fp16.safetensors"), DATA.resolve("kohya/style.safetensors"), DATA.resolve("adapters/subject"), 100);
    assertThat(outcome.weights()).as("weights loaded").isEqualTo(48);
    assertThat(outcome.loraChangedTheRender()).as("the fused LoRAs change the render").isTrue();
    assertThat(outcome.weightsChanged()).as("weights not bit for bit the original after 100 cycles").isZero();
    assertThat(outcome.renderRestored()).as("the render after the last unfuse is the base's").isTrue();
  }
}

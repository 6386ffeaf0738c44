package dev.loramerge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

class ModuleKeyTest {
  @Test
  void parsesAndPrintsTheCanonicalForm() {
    ModuleKey key = ModuleKey.parse("text_encoder_2.text_model.encoder.layers.3.mlp.fc1");
    assertThat(key.component()).isEqualTo(Component.TEXT_ENCODER_2);
    assertThat(key.path()).isEqualTo("text_model.encoder.layers.3.mlp.fc1");
    assertThat(key.toString()).isEqualTo("text_encoder_2.text_model.encoder.layers.3.mlp.fc1");
  }

  @Test
  void ordersNumericSegmentsAsNumbers() {
    List<String> sorted =
        Stream.of("unet.layers.10.x", "unet.layers.2.x", "text_encoder.a", "unet.layers.1.x")
            .map(ModuleKey::parse)
            .sorted()
            .map(ModuleKey::toString)
            .collect(Collectors.toList());
    assertThat(sorted).containsExactly("unet.layers.1.x", "unet.layers.2.x", "unet.layers.10.x", "text_encoder.a");
  }

  @Test
  void ordersLikeComparingSplitSegments() {
    SplittableRandom random = new SplittableRandom(11);
    String[] segments = {"0", "1", "2", "9", "10", "11", "100", "01", "a", "ab", "b", "a1", "proj", "proj_in", ""};
    List<ModuleKey> keys = new ArrayList<>();
    for (int i = 0; i < 400; i++) {
      int count = 1 + random.nextInt(6);
      StringBuilder path = new StringBuilder();
      for (int s = 0; s < count; s++) {
        String segment = segments[random.nextInt(segments.length - 1)];
        path.append(s == 0 ? "" : ".").append(segment.isEmpty() ? "x" : segment);
      }
      keys.add(ModuleKey.of(Component.UNET, path.toString()));
    }
    for (ModuleKey left : keys) {
      for (ModuleKey right : keys) {
        assertThat(Integer.signum(left.compareTo(right)))
            .as("%s vs %s", left, right)
            .isEqualTo(Integer.signum(splitOrder(left.path(), right.path())));
      }
    }
  }

  /** The order as documented, by splitting: the independent reference. */
  private static int splitOrder(String left, String right) {
    String[] a = left.split("\\.");
    String[] b = right.split("\\.");
    for (int i = 0; i < Math.min(a.length, b.length); i++) {
      boolean numberA = a[i].matches("[1-9][0-9]*|0");
      boolean numberB = b[i].matches("[1-9][0-9]*|0");
      int order;
      if (numberA && numberB) {
        order = new java.math.BigInteger(a[i]).compareTo(new java.math.BigInteger(b[i]));
      } else if (numberA != numberB) {
        order = numberA ? -1 : 1;
      } else {
        order = a[i].compareTo(b[i]);
      }
      if (order != 0) {
        return order;
      }
    }
    return Integer.compare(a.length, b.length);
  }

  @Test
  void rejectsNamesWithoutAComponent() {
    assertThatThrownBy(() -> ModuleKey.parse("vae.decoder.conv_in"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("not a module key (expected unet, text_encoder, text_encoder_2 or transformer): 'vae.decoder.conv_in'");
    assertThatThrownBy(() -> ModuleKey.of(Component.UNET, "a..b"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("not a module path: 'a..b'");
  }
}

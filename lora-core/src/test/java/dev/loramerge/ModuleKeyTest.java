package dev.loramerge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
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
  void rejectsNamesWithoutAComponent() {
    assertThatThrownBy(() -> ModuleKey.parse("vae.decoder.conv_in"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("not a module key (expected unet, text_encoder or text_encoder_2): 'vae.decoder.conv_in'");
    assertThatThrownBy(() -> ModuleKey.of(Component.UNET, "a..b"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("not a module path: 'a..b'");
  }
}

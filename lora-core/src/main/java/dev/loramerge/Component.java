package dev.loramerge;

import java.util.Optional;

/** The part of a diffusion pipeline a LoRA module belongs to, named as diffusers names it. */
public enum Component {
  UNET("unet"),
  TEXT_ENCODER("text_encoder"),
  TEXT_ENCODER_2("text_encoder_2"),
  /** SD3's third text encoder, T5-XXL; Flux.1 has its T5 as {@link #TEXT_ENCODER_2}, as diffusers does. */
  TEXT_ENCODER_3("text_encoder_3"),
  /** The denoising transformer of DiT models (Flux.1), where SD1.5 and SDXL have a UNet. */
  TRANSFORMER("transformer");

  private final String prefix;

  Component(String prefix) {
    this.prefix = prefix;
  }

  /** The diffusers prefix, e.g. {@code "text_encoder_2"}. */
  public String prefix() {
    return prefix;
  }

  /** The component whose prefix is {@code prefix}. */
  public static Optional<Component> fromPrefix(String prefix) {
    for (Component component : values()) {
      if (component.prefix.equals(prefix)) {
        return Optional.of(component);
      }
    }
    return Optional.empty();
  }
}

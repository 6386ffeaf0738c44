package dev.loramerge.io;

import java.util.List;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * Recognises LoRA files of layouts this library does not read, by their tensor names, so that a
 * refusal says what the file is instead of that it holds no LoRA: SD3's original MMDiT names
 * ({@code joint_blocks.N.x_block…}, bare or under ComfyUI's {@code diffusion_model.}).
 */
final class KnownLayouts {
  private static final Pattern SD3 = Pattern.compile("(diffusion_model\\.|model\\.diffusion_model\\.)?joint_blocks\\..*");

  private KnownLayouts() {}

  /** What the file with these tensor names is, if a layout this library does not read is recognised. */
  static Optional<String> describe(List<String> names) {
    if (names.stream().anyMatch(name -> SD3.matcher(name).matches())) {
      return Optional.of("an SD3 / SD3.5 LoRA in original MMDiT names ('joint_blocks.N.x_block.…'), which is not"
          + " supported yet; the kohya ('lora_unet_joint_blocks_…') and diffusers ('transformer.…') layouts are");
    }
    return Optional.empty();
  }
}

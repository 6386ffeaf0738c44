package dev.loramerge.io;

import java.util.List;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * Recognises LoRA files of layouts this library does not read, by their tensor names, so that a
 * refusal says what the file is instead of that it holds no LoRA.
 *
 * <p>The names are those the tools write: XLabs' Flux trainer ({@code
 * double_blocks.N.processor.qkv_lora1.down.weight}, read by diffusers'
 * {@code _convert_xlabs_flux_lora_to_diffusers}); ComfyUI's Flux keys ({@code
 * diffusion_model.double_blocks.N…} with {@code .lora_up}/{@code .lora_down}, {@code .diff},
 * {@code .diff_b}, as {@code comfy/lora.py} reads them); BFL's control LoRAs (original names with
 * {@code lora_A}/{@code lora_B}, norm scales and biases); SD3's original MMDiT names ({@code
 * joint_blocks.N.x_block…}).
 */
final class KnownLayouts {
  private static final Pattern XLABS = Pattern.compile("(double|single)_blocks\\.\\d+\\.processor\\.(qkv|proj)_lora\\d?\\.(down|up)\\.weight");
  private static final Pattern COMFY_FLUX = Pattern.compile("(model\\.)?diffusion_model\\.(double_blocks|single_blocks|img_in|txt_in|final_layer)\\..*");
  private static final Pattern BFL_FLUX = Pattern.compile("(double_blocks|single_blocks|img_in|txt_in|final_layer|time_in|vector_in|guidance_in)\\..*");
  private static final Pattern SD3 = Pattern.compile("(diffusion_model\\.|model\\.diffusion_model\\.)?joint_blocks\\..*");

  private KnownLayouts() {}

  /** What the file with these tensor names is, if a layout this library does not read is recognised. */
  static Optional<String> describe(List<String> names) {
    if (names.stream().anyMatch(name -> XLABS.matcher(name).matches())) {
      return Optional.of("a Flux.1 LoRA in XLabs layout ('double_blocks.N.processor.qkv_lora1.down.weight'), which is not"
          + " supported yet; diffusers or ComfyUI can convert it to the diffusers layout");
    }
    if (names.stream().anyMatch(name -> COMFY_FLUX.matcher(name).matches())) {
      return Optional.of("a Flux.1 LoRA in ComfyUI layout ('diffusion_model.double_blocks.…' names), which is not"
          + " supported yet; the kohya ('lora_unet_double_blocks_…') and diffusers ('transformer.…') layouts are");
    }
    if (names.stream().anyMatch(name -> BFL_FLUX.matcher(name).matches())) {
      return Optional.of("a Flux.1 LoRA in BFL layout (original checkpoint names, as BFL's control LoRAs write them),"
          + " which is not supported yet; the kohya and diffusers layouts are");
    }
    if (names.stream().anyMatch(name -> SD3.matcher(name).matches())) {
      return Optional.of("an SD3 / SD3.5 LoRA in original MMDiT names ('joint_blocks.N.x_block.…'), which is not"
          + " supported yet; the kohya ('lora_unet_joint_blocks_…') and diffusers ('transformer.…') layouts are");
    }
    return Optional.empty();
  }
}

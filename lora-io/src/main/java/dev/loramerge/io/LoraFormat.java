package dev.loramerge.io;

import java.util.Locale;
import java.util.Optional;

/** The on-disk layouts of a LoRA adapter this library reads and writes. */
public enum LoraFormat {
  /**
   * A PEFT folder: {@code adapter_config.json} (r, lora_alpha, rank_pattern, alpha_pattern,
   * use_rslora, target_modules) and {@code adapter_model.safetensors} with keys
   * {@code base_model.model.<path>.lora_A.weight} / {@code .lora_B.weight}. One model per
   * adapter: a UNet, or a text encoder (paths starting {@code text_model.}).
   */
  PEFT,
  /**
   * kohya sd-scripts / A1111: one safetensors file with {@code lora_unet_…}, {@code lora_te_…},
   * {@code lora_te1_…}, {@code lora_te2_…} module names, {@code .lora_down.weight},
   * {@code .lora_up.weight} and {@code .alpha}. SD1.5 names are underscored diffusers paths,
   * SDXL, Flux.1 and SD3.5 names underscored original (sgm, BFL, MMDiT) paths, with the original
   * checkpoint's fused weights ({@code lora_unet_double_blocks_0_img_attn_qkv}) split into their
   * diffusers parts on reading and joined on writing.
   */
  KOHYA,
  /**
   * A diffusers pipeline file ({@code pytorch_lora_weights.safetensors}): keys prefixed
   * {@code unet.}, {@code transformer.}, {@code text_encoder.}, {@code text_encoder_2.} with {@code lora_A}/{@code
   * lora_B} (or {@code lora.down}/{@code lora.up}, or the older attention-processor names), and
   * alphas in the {@code lora_adapter_metadata} JSON of the header.
   */
  DIFFUSERS;

  /** The lower-case name used on the command line. */
  public String cliName() {
    return name().toLowerCase(Locale.ROOT);
  }

  /** The format named {@code name} on the command line ({@code peft}, {@code kohya}, {@code diffusers}). */
  public static Optional<LoraFormat> fromCliName(String name) {
    for (LoraFormat format : values()) {
      if (format.cliName().equals(name.toLowerCase(Locale.ROOT))) {
        return Optional.of(format);
      }
    }
    return Optional.empty();
  }
}

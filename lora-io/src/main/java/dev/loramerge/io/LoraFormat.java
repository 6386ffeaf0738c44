package dev.loramerge.io;

import java.util.Locale;
import java.util.Optional;

/** The on-disk layouts of a LoRA adapter this library reads, and writes where {@link #writable()}. */
public enum LoraFormat {
  /**
   * A PEFT folder: {@code adapter_config.json} (r, lora_alpha, rank_pattern, alpha_pattern,
   * use_rslora, target_modules) and {@code adapter_model.safetensors} with keys
   * {@code base_model.model.<path>.lora_A.weight} / {@code .lora_B.weight}. One model per
   * adapter: a UNet, a transformer, or a text encoder (paths starting {@code text_model.}, CLIP, or
   * {@code encoder.block.}, T5).
   */
  PEFT,
  /**
   * kohya sd-scripts / A1111: one safetensors file with {@code lora_unet_…}, {@code lora_te_…},
   * {@code lora_te1_…}, {@code lora_te2_…}, {@code lora_te3_…} (T5) module names, {@code .lora_down.weight},
   * {@code .lora_up.weight} and {@code .alpha}. SD1.5 names are underscored diffusers paths,
   * SDXL, Flux.1 and SD3.5 names underscored original (sgm, BFL, MMDiT) paths, with the original
   * checkpoint's fused weights ({@code lora_unet_double_blocks_0_img_attn_qkv}) split into their
   * diffusers parts on reading and joined on writing.
   */
  KOHYA,
  /**
   * A diffusers pipeline file ({@code pytorch_lora_weights.safetensors}): keys prefixed
   * {@code unet.}, {@code transformer.}, {@code text_encoder.}, {@code text_encoder_2.}, {@code text_encoder_3.} with {@code lora_A}/{@code
   * lora_B} (or {@code lora.down}/{@code lora.up}, or the older attention-processor names),
   * alphas in the {@code lora_adapter_metadata} JSON of the header, and PEFT's {@code
   * lora_B.bias} for a bias difference.
   */
  DIFFUSERS,
  /**
   * Read only: a Flux.1 LoRA of XLabs' x-flux trainer: {@code double_blocks.N.processor.qkv_lora1}
   * (image q, k, v), {@code qkv_lora2} (text), {@code proj_lora1}, {@code proj_lora2}, and {@code
   * single_blocks.N.processor.qkv_lora} / {@code proj_lora}, each with {@code .down.weight} and
   * {@code .up.weight}; no alphas (scale 1).
   */
  XLABS,
  /**
   * Read only: a Flux.1 or SD3.5 LoRA in ComfyUI's keys, the original checkpoint's module names
   * (BFL's {@code double_blocks.0.img_attn.qkv}, Stability's MMDiT {@code
   * joint_blocks.0.x_block.attn.qkv}) under {@code diffusion_model.} or {@code
   * model.diffusion_model.} (SD3.5's also bare), with {@code .lora_down.weight}/{@code
   * .lora_up.weight}/{@code .alpha} or {@code .lora_A.weight}/{@code .lora_B.weight}, full
   * differences {@code .diff}, bias differences {@code .diff_b} and the LyCORIS kinds' tensors.
   */
  COMFYUI,
  /**
   * Read only: a Flux.1 LoRA in BFL's original module names without a prefix, as BFL's control
   * LoRAs (FLUX.1-Canny-dev-lora, FLUX.1-Depth-dev-lora) are written: {@code lora_A}/{@code
   * lora_B} weights and {@code lora_B.bias}, a bias difference.
   */
  BFL;

  /** The lower-case name used on the command line. */
  public String cliName() {
    return name().toLowerCase(Locale.ROOT);
  }

  /** Whether adapters can be written in this format ({@link #PEFT}, {@link #KOHYA}, {@link #DIFFUSERS}). */
  public boolean writable() {
    return this == PEFT || this == KOHYA || this == DIFFUSERS;
  }

  /** The format named {@code name} on the command line ({@code peft}, {@code kohya}, {@code diffusers}, {@code xlabs}, …). */
  public static Optional<LoraFormat> fromCliName(String name) {
    for (LoraFormat format : values()) {
      if (format.cliName().equals(name.toLowerCase(Locale.ROOT))) {
        return Optional.of(format);
      }
    }
    return Optional.empty();
  }
}

package dev.loramerge.fuse;

import com.google.common.collect.ImmutableList;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import java.util.Optional;
import java.util.Set;

/**
 * Where a LoRA module's base weight lives in a target: the names a module may have in a diffusers
 * UNet, transformer or text-encoder file, in a whole diffusers pipeline, and in the original
 * (CompVis / Stability / Black Forest Labs) single-file checkpoints, tried in that order. A Flux
 * module that is a part of a fused weight ({@code img_attn.qkv}, {@code linear1}) has no weight of
 * its own there; {@link LoraFuser} finds the fused one by {@link #originalNames}.
 */
final class BaseWeightNames {
  private BaseWeightNames() {}

  /** Every name the weight of {@code key} may have, most specific first. */
  static ImmutableList<String> candidates(ModuleKey key, Optional<Architecture> architecture) {
    ImmutableList.Builder<String> names = ImmutableList.builder();
    String path = key.path();
    names.add(path + ".weight");
    names.add(key.component().prefix() + "." + path + ".weight");
    Optional<ModuleSpec> spec = architecture.flatMap(arch -> arch.module(key));
    switch (key.component()) {
      case UNET:
        spec.flatMap(ModuleSpec::originalPath)
            .ifPresent(
                original -> {
                  names.add("model.diffusion_model." + original + ".weight");
                  names.add(original + ".weight");
                });
        break;
      case TRANSFORMER:
        spec.flatMap(ModuleSpec::originalPath).ifPresent(original -> names.addAll(originalNames(original)));
        break;
      case TEXT_ENCODER:
        if (architecture.isPresent() && architecture.get() == Architecture.flux()) {
          // ComfyUI's single-file Flux checkpoints hold CLIP-L under text_encoders.clip_l.
          names.add("text_encoders.clip_l.transformer." + path + ".weight");
        } else if (architecture.isPresent() && architecture.get() == Architecture.sd2()) {
          // SD2's single-file checkpoints hold the text encoder in OpenCLIP's layout
          // (cond_stage_model.model.transformer.resblocks, q/k/v fused): not looked up.
          return names.build();
        } else if (architecture.isPresent() && architecture.get() == Architecture.sdxl()) {
          names.add("conditioner.embedders.0.transformer." + path + ".weight");
        } else {
          names.add("cond_stage_model.transformer." + path + ".weight");
        }
        break;
      case TEXT_ENCODER_2:
        // The original SDXL checkpoint stores the second encoder in OpenCLIP's layout (fused
        // in_proj q/k/v); its modules have no single weight there to fuse into.
        break;
      default:
        throw new AssertionError(key.component());
    }
    return names.build();
  }

  /**
   * The names a weight of BFL's original Flux checkpoint has: bare ({@code flux1-dev.safetensors}),
   * under ComfyUI's {@code model.diffusion_model.} (single-file checkpoints) or {@code
   * diffusion_model.}.
   */
  static ImmutableList<String> originalNames(String originalPath) {
    return ImmutableList.of(
        originalPath + ".weight",
        "model.diffusion_model." + originalPath + ".weight",
        "diffusion_model." + originalPath + ".weight");
  }

  /** The first of {@link #candidates} that {@code names} holds. */
  static Optional<String> resolve(ModuleKey key, Optional<Architecture> architecture, Set<String> names) {
    return candidates(key, architecture).stream().filter(names::contains).findFirst();
  }
}

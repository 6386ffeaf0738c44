package dev.loramerge.fuse;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.Component;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where a LoRA module's base weight lives in a target: the names a module may have in a diffusers
 * UNet, transformer or text-encoder file, in a whole diffusers pipeline, and in the original
 * (CompVis / Stability / Black Forest Labs) single-file checkpoints, tried in that order. A Flux
 * or SD3.5 module that is a part of a fused weight ({@code img_attn.qkv}, {@code linear1}, {@code
 * x_block.attn.qkv}, the swapped final modulation) has no weight of its own there; {@link
 * LoraFuser} finds the fused one by {@link #originalNames}.
 */
public final class BaseWeightNames {
  private static final String OPEN_CLIP_RESBLOCKS = "conditioner.embedders.1.model.transformer.resblocks.";
  private static final Pattern OPEN_CLIP_LAYER = Pattern.compile("text_model\\.encoder\\.layers\\.(\\d+)\\.(.+)");
  private static final ImmutableMap<String, String> OPEN_CLIP_NAMES =
      ImmutableMap.of("self_attn.out_proj", "attn.out_proj", "mlp.fc1", "mlp.c_fc", "mlp.fc2", "mlp.c_proj");

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
        // The original SDXL checkpoint stores the second encoder in OpenCLIP's layout: out_proj
        // and the MLP have a weight of their own there; q, k and v share in_proj_weight
        // (openClipInProjection).
        if (architecture.isPresent() && architecture.get() == Architecture.sdxl()) {
          Matcher layer = OPEN_CLIP_LAYER.matcher(path);
          if (layer.matches() && OPEN_CLIP_NAMES.containsKey(layer.group(2))) {
            names.add(OPEN_CLIP_RESBLOCKS + layer.group(1) + "." + OPEN_CLIP_NAMES.get(layer.group(2)) + ".weight");
          }
        }
        break;
      default:
        throw new AssertionError(key.component());
    }
    return names.build();
  }

  /**
   * The fused q/k/v weight of OpenCLIP's attention that {@code key} is a part of in the original
   * SDXL checkpoint ({@code conditioner.embedders.1.model.transformer.resblocks.N.attn.in_proj},
   * rows q, k, v as {@code torch.nn.MultiheadAttention} stacks them), for a q/k/v module of
   * SDXL's second text encoder.
   */
  static Optional<FusedModule> openClipInProjection(ModuleKey key, Optional<Architecture> architecture) {
    if (key.component() != Component.TEXT_ENCODER_2 || architecture.isEmpty() || architecture.get() != Architecture.sdxl()) {
      return Optional.empty();
    }
    Matcher layer = OPEN_CLIP_LAYER.matcher(key.path());
    if (!layer.matches() || !layer.group(2).matches("self_attn\\.[qkv]_proj")) {
      return Optional.empty();
    }
    Optional<ModuleSpec> spec = architecture.get().module(key);
    if (spec.isEmpty()) {
      return Optional.empty();
    }
    long width = spec.get().inFeatures();
    String prefix = "text_model.encoder.layers." + layer.group(1) + ".self_attn.";
    ImmutableList.Builder<FusedModule.Segment> segments = ImmutableList.builder();
    for (String part : new String[] {"q_proj", "k_proj", "v_proj"}) {
      segments.add(new FusedModule.Segment(ModuleKey.of(Component.TEXT_ENCODER_2, prefix + part), 0, width));
    }
    return Optional.of(
        new FusedModule(OPEN_CLIP_RESBLOCKS + layer.group(1) + ".attn.in_proj", width, spec.get().blockId(), segments.build()));
  }

  /**
   * The names a fused weight has in a checkpoint: OpenCLIP's {@code in_proj_weight}, or {@link
   * #originalNames} for BFL's.
   */
  static ImmutableList<String> fusedNames(FusedModule module) {
    return module.originalPath().endsWith(".in_proj")
        ? ImmutableList.of(module.originalPath() + "_weight")
        : originalNames(module.originalPath());
  }

  /**
   * The names a weight of an original transformer checkpoint has: bare ({@code
   * flux1-dev.safetensors}), under {@code model.diffusion_model.} (ComfyUI's single-file
   * checkpoints, {@code sd3.5_large.safetensors}) or {@code diffusion_model.}.
   */
  static ImmutableList<String> originalNames(String originalPath) {
    return ImmutableList.of(
        originalPath + ".weight",
        "model.diffusion_model." + originalPath + ".weight",
        "diffusion_model." + originalPath + ".weight");
  }

  /** The first of {@link #candidates} that {@code names} holds. */
  public static Optional<String> resolve(ModuleKey key, Optional<Architecture> architecture, Set<String> names) {
    return candidates(key, architecture).stream().filter(names::contains).findFirst();
  }
}

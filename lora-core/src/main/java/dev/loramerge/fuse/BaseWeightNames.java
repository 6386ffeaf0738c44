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
  /** SDXL's second text encoder (OpenCLIP bigG) in sgm's single-file checkpoint. */
  private static final String SDXL_RESBLOCKS = "conditioner.embedders.1.model.transformer.resblocks.";
  /** SD2.x's text encoder (OpenCLIP ViT-H) in the single-file checkpoint, as ldm's FrozenOpenCLIPEmbedder names it. */
  private static final String SD2_RESBLOCKS = "cond_stage_model.model.transformer.resblocks.";
  /** ComfyUI's single-file Flux and SD3 checkpoints: {@code text_encoders.clip_l.}, {@code clip_g.}, {@code t5xxl.}. */
  private static final String COMFY_TEXT_ENCODERS = "text_encoders.";
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
        // A norm's scale is a parameter named scale in BFL's checkpoint (flux/modules/layers.py RMSNorm).
        architecture.flatMap(arch -> arch.normScale(key)).ifPresent(norm -> names.addAll(
            originalNames(norm.originalPath()).stream().map(name -> name.substring(0, name.length() - "weight".length()) + "scale")
                .toList()));
        break;
      case TEXT_ENCODER:
        if (architecture.isPresent() && (architecture.get() == Architecture.flux() || isSd3(architecture.get()))) {
          // ComfyUI's single-file Flux and SD3 checkpoints hold CLIP-L under text_encoders.clip_l.
          names.add(COMFY_TEXT_ENCODERS + "clip_l.transformer." + path + ".weight");
        } else if (architecture.isPresent() && architecture.get() == Architecture.sd2()) {
          openClipName(SD2_RESBLOCKS, path).ifPresent(names::add);
        } else if (architecture.isPresent() && architecture.get() == Architecture.sdxl()) {
          names.add("conditioner.embedders.0.transformer." + path + ".weight");
        } else {
          names.add("cond_stage_model.transformer." + path + ".weight");
        }
        break;
      case TEXT_ENCODER_2:
        if (architecture.isPresent() && architecture.get() == Architecture.sdxl()) {
          // The original SDXL checkpoint stores the second encoder in OpenCLIP's layout: out_proj
          // and the MLP have a weight of their own there; q, k and v share in_proj_weight
          // (openClipInProjection).
          openClipName(SDXL_RESBLOCKS, path).ifPresent(names::add);
        } else if (architecture.isPresent() && architecture.get() == Architecture.flux()) {
          // Flux's T5: bare in t5xxl_fp16.safetensors (the first name), under t5xxl in ComfyUI's
          // single-file checkpoints.
          names.add(COMFY_TEXT_ENCODERS + "t5xxl.transformer." + path + ".weight");
        } else if (architecture.isPresent() && isSd3(architecture.get())) {
          names.add(COMFY_TEXT_ENCODERS + "clip_g.transformer." + path + ".weight");
        }
        break;
      case TEXT_ENCODER_3:
        if (architecture.isPresent() && isSd3(architecture.get())) {
          names.add(COMFY_TEXT_ENCODERS + "t5xxl.transformer." + path + ".weight");
        }
        break;
      default:
        throw new AssertionError(key.component());
    }
    return names.build();
  }

  private static boolean isSd3(Architecture architecture) {
    return architecture == Architecture.sd35Medium() || architecture == Architecture.sd35Large();
  }

  /** The OpenCLIP name of a transformers CLIP module with a weight of its own there (out_proj, the MLP). */
  private static Optional<String> openClipName(String resblocks, String path) {
    Matcher layer = OPEN_CLIP_LAYER.matcher(path);
    if (layer.matches() && OPEN_CLIP_NAMES.containsKey(layer.group(2))) {
      return Optional.of(resblocks + layer.group(1) + "." + OPEN_CLIP_NAMES.get(layer.group(2)) + ".weight");
    }
    return Optional.empty();
  }

  /**
   * The fused q/k/v weight of OpenCLIP's attention that {@code key} is a part of in an original
   * single-file checkpoint ({@code resblocks.N.attn.in_proj}, rows q, k, v as {@code
   * torch.nn.MultiheadAttention} stacks them), for a q/k/v module of SDXL's second text encoder
   * ({@code conditioner.embedders.1.model.transformer.}) or of SD2.x's text encoder ({@code
   * cond_stage_model.model.transformer.}).
   */
  static Optional<FusedModule> openClipInProjection(ModuleKey key, Optional<Architecture> architecture) {
    if (architecture.isEmpty()) {
      return Optional.empty();
    }
    String resblocks;
    if (key.component() == Component.TEXT_ENCODER_2 && architecture.get() == Architecture.sdxl()) {
      resblocks = SDXL_RESBLOCKS;
    } else if (key.component() == Component.TEXT_ENCODER && architecture.get() == Architecture.sd2()) {
      resblocks = SD2_RESBLOCKS;
    } else {
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
      segments.add(new FusedModule.Segment(ModuleKey.of(key.component(), prefix + part), 0, width));
    }
    return Optional.of(
        new FusedModule(resblocks + layer.group(1) + ".attn.in_proj", width, spec.get().blockId(), segments.build()));
  }

  /**
   * The weight of an original single-file checkpoint that holds {@code key}'s weight transposed:
   * OpenCLIP's {@code text_projection} is a bare parameter applied as {@code x @ text_projection},
   * so sgm's SDXL checkpoint holds SDXL text encoder 2's {@code text_projection} Linear weight as
   * {@code conditioner.embedders.1.model.text_projection}, [in, out] (diffusers' {@code
   * convert_open_clip_checkpoint} loads it as {@code .T}).
   */
  static Optional<String> transposedName(ModuleKey key, Optional<Architecture> architecture) {
    if (key.component() == Component.TEXT_ENCODER_2 && key.path().equals("text_projection")
        && architecture.isPresent() && architecture.get() == Architecture.sdxl()) {
      return Optional.of("conditioner.embedders.1.model.text_projection");
    }
    return Optional.empty();
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

package dev.loramerge.io;

import dev.loramerge.AdapterKind;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * The tensors of the adapter kinds other than plain LoRA, in the kohya / LyCORIS layout
 * ({@code lycoris/modules/*.py} {@code custom_state_dict}; ComfyUI {@code comfy/weight_adapter}
 * reads the same names): {@code <module>.lora_mid.weight}, {@code .hada_w1_a} … {@code
 * .hada_t2}, {@code .lokr_w1} … {@code .lokr_t2}, {@code .diff}, {@code .diff_b} and {@code
 * .dora_scale}, and PEFT's and diffusers' DoRA {@code .lora_magnitude_vector}.
 */
final class LycorisParts {
  /** The suffixes of the kinds' tensors, with the part name each stands for. */
  private static final Map<String, String> SUFFIXES = new LinkedHashMap<>();

  static {
    SUFFIXES.put(".lora_mid.weight", "lora_mid");
    for (String part : List.of("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1",
        "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "diff")) {
      SUFFIXES.put("." + part, part);
    }
  }

  static final String DIFF_B = ".diff_b";
  static final String DORA_SCALE = ".dora_scale";
  static final String MAGNITUDE = ".lora_magnitude_vector";

  private LycorisParts() {}

  /** Whether {@code suffix} names a tensor of a LyCORIS kind, a bias difference or a magnitude. */
  static boolean isKindSuffix(String suffix) {
    return SUFFIXES.containsKey(suffix) || suffix.equals(DIFF_B) || suffix.equals(DORA_SCALE);
  }

  /** Every {@linkplain #isKindSuffix kind's suffix}, for layouts whose module names hold dots. */
  static List<String> kindSuffixes() {
    List<String> suffixes = new java.util.ArrayList<>(SUFFIXES.keySet());
    suffixes.add(DIFF_B);
    suffixes.add(DORA_SCALE);
    return suffixes;
  }

  /** Files {@code tensor}, whose name ends in a {@linkplain #isKindSuffix kind's suffix}, under {@code module}. */
  static void collect(FormatParts.Module module, String suffix, TensorData tensor) {
    String part = SUFFIXES.get(suffix);
    if (part != null) {
      module.kindParts.put(part, tensor);
    } else if (suffix.equals(DIFF_B)) {
      module.biasDiff = tensor;
    } else if (suffix.equals(DORA_SCALE)) {
      module.doraScale = tensor;
    } else {
      throw new IllegalArgumentException("not a suffix of an adapter kind's tensor: " + suffix);
    }
  }

  /** Whether the module has a kind's tensors (else it is plain LoRA with down and up). */
  static boolean hasKind(FormatParts.Module module) {
    return !module.kindParts.isEmpty();
  }

  /**
   * The module {@code parts} holds, under {@code key}: its kind from the tensors it has, alpha
   * (absent: the rank, which makes the scale 1, as LyCORIS and ComfyUI read a missing alpha), its
   * DoRA magnitude and bias difference. A LyCORIS convolution stored flattened ([out, in·k·k])
   * gets its 4-d shape from the architecture ({@code architecture}, or the first that has the
   * module by {@code kohyaName} with as many elements).
   */
  static LoraModule build(
      String fileName, FormatParts.Module parts, ModuleKey key, String kohyaName, Optional<Architecture> architecture) {
    LoraModule module;
    try {
      if (!hasKind(parts)) {
        module = LoraModule.of(key, parts.down, parts.up, parts.alpha.orElse(parts.down.dim(0)), ScaleRule.STANDARD);
      } else {
        Map<String, TensorData> tensors = new LinkedHashMap<>(parts.kindParts);
        AdapterKind kind = kindOf(fileName, parts.name, tensors.keySet());
        if (kind == AdapterKind.LORA_TUCKER) {
          if (parts.down == null || parts.up == null) {
            throw new LoraMergeException(
                String.format(Locale.ROOT, "%s: module '%s' has lora_mid but not both lora_down and lora_up", fileName, parts.name));
          }
          tensors.put("lora_down", parts.down);
          tensors.put("lora_up", parts.up);
        } else if (parts.down != null || parts.up != null) {
          throw new LoraMergeException(
              String.format(
                  Locale.ROOT, "%s: module '%s' has both LoRA factors and %s tensors %s", fileName, parts.name,
                  kind.displayName(), tensors.keySet()));
        }
        LoraModule implied = LoraModule.ofKind(key, kind, tensors, 1, Optional.empty());
        double alpha = parts.alpha.orElse(Math.max(1, implied.rank()));
        long[] shape = implied.weightShape();
        if (shape.length == 2) {
          shape = convolutionShape(kohyaName, shape, architecture).orElse(shape);
        }
        module = LoraModule.ofKind(key, kind, tensors, alpha, Optional.of(shape));
      }
      if (parts.doraScale != null) {
        module = module.withMagnitude(DoraMagnitude.lycoris(parts.doraScale, module.outFeatures()));
      }
      if (parts.magnitudeVector != null) {
        module = module.withMagnitude(DoraMagnitude.peft(parts.magnitudeVector));
      }
      if (parts.biasDiff != null) {
        module = module.withBiasDiff(parts.biasDiff);
      }
    } catch (LoraMergeException e) {
      if (e.getMessage().startsWith(fileName)) {
        throw e;
      }
      // A provisional key is the file's own name under a component: name the module as the file does.
      String message = key.path().equals(kohyaName) ? e.getMessage().replace("'" + key + "'", "'" + kohyaName + "'") : e.getMessage();
      throw new LoraMergeException(fileName + ": " + message, e);
    }
    return module;
  }

  private static AdapterKind kindOf(String fileName, String module, java.util.Set<String> parts) {
    boolean mid = parts.contains("lora_mid");
    boolean hada = parts.stream().anyMatch(part -> part.startsWith("hada_"));
    boolean lokr = parts.stream().anyMatch(part -> part.startsWith("lokr_"));
    boolean diff = parts.contains("diff");
    if ((mid ? 1 : 0) + (hada ? 1 : 0) + (lokr ? 1 : 0) + (diff ? 1 : 0) != 1) {
      throw new LoraMergeException(
          String.format(Locale.ROOT, "%s: module '%s' mixes the tensors of several adapter kinds: %s", fileName, module, parts));
    }
    if (mid) {
      return AdapterKind.LORA_TUCKER;
    }
    if (hada) {
      return parts.contains("hada_t1") || parts.contains("hada_t2") ? AdapterKind.LOHA_TUCKER : AdapterKind.LOHA;
    }
    return lokr ? AdapterKind.LOKR : AdapterKind.FULL;
  }

  private static Optional<long[]> convolutionShape(String kohyaName, long[] flat, Optional<Architecture> architecture) {
    List<Architecture> candidates = architecture.map(List::of).orElse(Architecture.all());
    for (Architecture candidate : candidates) {
      Optional<ModuleSpec> spec = candidate.resolveKohyaName(kohyaName).flatMap(candidate::module);
      if (spec.isPresent()) {
        long[] shape = spec.get().weightShape();
        if (shape.length == 4 && shape[0] == flat[0] && TensorData.numel(shape) == TensorData.numel(flat)) {
          return Optional.of(shape);
        }
      }
    }
    return Optional.empty();
  }

  /**
   * The tensors of a module in the kohya / LyCORIS layout under {@code name}, for a module that is
   * not plain LoRA; alpha is written by the caller.
   *
   * @throws LoraMergeException for a PEFT DoRA magnitude, which LyCORIS's {@code dora_scale}
   *     cannot hold exactly (LyCORIS adds ε to the norm, PEFT does not)
   */
  static Map<String, TensorData> kohyaTensors(LoraModule module, String name) {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    if (module.adapterKind() == AdapterKind.LORA) {
      tensors.put(name + ".lora_down.weight", module.down());
      tensors.put(name + ".lora_up.weight", module.up());
    } else {
      module.parts().forEach((part, tensor) -> tensors.put(
          name + "." + part + (part.startsWith("lora_") ? ".weight" : ""), tensor));
    }
    module.magnitude().ifPresent(magnitude -> {
      if (magnitude.epsilon() != DoraMagnitude.LYCORIS_EPSILON) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "module '%s' has a PEFT DoRA magnitude, which the kohya/LyCORIS layout cannot hold exactly (LyCORIS adds"
                    + " ε = 2⁻²³ to the norm); write it as PEFT or diffusers", module.key()));
      }
      tensors.put(name + DORA_SCALE, magnitude.values());
    });
    module.biasDiff().ifPresent(diff -> tensors.put(name + DIFF_B, diff));
    return tensors;
  }

  /**
   * Refuses a {@link AdapterKind#REPLACEMENT}, which only the diffusers layout holds (as the
   * transformer's own weight name, {@code transformer.<path>.weight}, which diffusers'
   * {@code FluxLoraLoaderMixin} loads in place of the base's).
   *
   * @throws LoraMergeException for a replacement
   */
  static void checkNotReplacement(LoraModule module, String layout) {
    if (module.adapterKind() == AdapterKind.REPLACEMENT) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' is a replacement (its tensor takes the base weight's place), which the %s layout cannot hold;"
                  + " write it in the diffusers layout, or fuse it", module.key(), layout));
    }
  }

  /**
   * Refuses a module that a LoRA-only layout cannot hold, naming it and its kind. A Tucker LoCon
   * is written as its exact factors (the down factor in float64, the core contracted with
   * {@code lora_down}).
   *
   * @throws LoraMergeException for a kind without LoRA factors, a bias difference (unless {@code
   *     loraBiasAllowed} and the module is a LoRA: PEFT's {@code lora_B.bias}), or a DoRA
   *     magnitude other than PEFT's
   */
  static void checkLoraLayout(LoraModule module, String layout, boolean peftMagnitudeAllowed, boolean loraBiasAllowed) {
    checkNotReplacement(module, layout);
    boolean magnitudeOk = module.magnitude().isEmpty()
        || (peftMagnitudeAllowed && module.magnitude().get().perOutput() && module.magnitude().get().epsilon() == 0);
    boolean biasOk = module.biasDiff().isEmpty() || (loraBiasAllowed && module.adapterKind() == AdapterKind.LORA);
    if (!module.adapterKind().factored() || !biasOk || !magnitudeOk) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' is a %s, which the %s layout cannot hold; write it in the kohya layout%s",
              module.key(), module.kindName(), layout,
              module.magnitude().isPresent() || module.biasDiff().isPresent()
                  ? ", or fuse it"
                  : ", or merge it into a LoRA first (cat and svd re-rank it by SVD)"));
    }
  }
}

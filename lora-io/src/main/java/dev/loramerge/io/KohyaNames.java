package dev.loramerge.io;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.Component;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * Resolves kohya's underscored module names ({@code lora_unet_down_blocks_0_attentions_0_proj_in})
 * to module keys and back.
 *
 * <p>Reading tries, in order: the architecture the caller named; the base weights' own keys;
 * every known architecture that holds each module with the file's shapes; the grammar of
 * diffusers names ({@link DiffusersNames}). Writing uses the names kohya's scripts write for the
 * detected architecture (SDXL: original sgm paths), and underscored diffusers paths otherwise.
 */
final class KohyaNames {
  /** OneTrainer's prefix for Flux's transformer, before the underscored diffusers path. */
  private static final String ONE_TRAINER_TRANSFORMER = "lora_transformer_";

  private static final ImmutableMap<String, Component> PREFIXES =
      ImmutableMap.of(
          "lora_unet_", Component.UNET,
          "lora_te1_", Component.TEXT_ENCODER,
          "lora_te2_", Component.TEXT_ENCODER_2,
          "lora_te3_", Component.TEXT_ENCODER_3,
          "lora_te_", Component.TEXT_ENCODER,
          ONE_TRAINER_TRANSFORMER, Component.TRANSFORMER);

  private KohyaNames() {}

  /** The component a kohya module name belongs to, if its prefix is known. */
  static Optional<Component> component(String name) {
    return PREFIXES.entrySet().stream()
        .filter(entry -> name.startsWith(entry.getKey()))
        .map(Map.Entry::getValue)
        .findFirst();
  }

  /**
   * Resolves every name of {@code weightShapes} (kohya module name → the shape of the base
   * weight its factors update).
   *
   * @throws LoraMergeException naming the first name nothing resolves
   */
  static Map<String, ModuleKey> resolve(
      String fileName, Map<String, long[]> weightShapes, LoraReadOptions options) {
    if (options.architecture().isPresent()) {
      return resolveAll(fileName, weightShapes, name -> byArchitecture(options.architecture().get(), name));
    }
    if (!options.baseKeys().isEmpty()) {
      Map<String, ModuleKey> byBase = baseKeyIndex(options.baseKeys());
      // A base in diffusers names cannot resolve kohya's original-checkpoint names
      // (input_blocks_4_1…) for SDXL; the architecture the shapes fit can.
      Optional<Architecture> fitting = Architecture.all().stream().filter(architecture -> fits(architecture, weightShapes)).findFirst();
      return resolveAll(
          fileName,
          weightShapes,
          name -> {
            ModuleKey key = byBase.get(name);
            Optional<ModuleKey> byArchitecture = fitting.flatMap(architecture -> byArchitecture(architecture, name));
            // The base's key picks between architectures that both fit (a T5 file: Flux's
            // text_encoder_2 or SD3's text_encoder_3), but a bare original-named base (SD3.5's
            // joint_blocks.0.x_block.attn.proj, Flux's double_blocks.0.img_attn.proj) keys its
            // kohya spelling as a UNet module no architecture has, and the file's fused qkv parts
            // would then find no weight: the fitting architecture's key wins over such a key.
            if (key != null && (byArchitecture.isEmpty() || isAnArchitecturesModule(key))) {
              return Optional.of(key);
            }
            // A single-file base (SD2.x's original names) may resolve none of a file of diffusers
            // paths that no architecture fits: the grammar still reads them.
            return byArchitecture.isPresent() ? byArchitecture : byGrammar(name);
          });
    }
    for (Architecture architecture : Architecture.all()) {
      if (fits(architecture, weightShapes)) {
        return resolveAll(fileName, weightShapes, name -> byArchitecture(architecture, name));
      }
    }
    return resolveAll(fileName, weightShapes, KohyaNames::byGrammar);
  }

  /**
   * The fused weight of an original checkpoint that a kohya name names ({@code
   * lora_unet_double_blocks_0_img_attn_qkv}), in the architecture the caller named or any known
   * one: the first whose weight takes {@code inFeatures} inputs (SD3.5 Medium and Large share the
   * names of blocks 0–23), else the first that has the name.
   */
  static Optional<FusedModule> resolveFused(String name, long inFeatures, LoraReadOptions options) {
    Optional<FusedModule> named = Optional.empty();
    for (Architecture architecture : options.architecture().map(ImmutableList::of).orElse(Architecture.all())) {
      Optional<FusedModule> fused = architecture.resolveFusedKohyaName(name);
      if (fused.isPresent() && fused.get().inFeatures() == inFeatures) {
        return fused;
      }
      named = named.or(() -> fused);
    }
    return named;
  }

  private interface Resolver {
    Optional<ModuleKey> resolve(String name);
  }

  private static Map<String, ModuleKey> resolveAll(
      String fileName, Map<String, long[]> weightShapes, Resolver resolver) {
    Map<String, ModuleKey> keys = new LinkedHashMap<>();
    Map<ModuleKey, String> seen = new HashMap<>();
    for (String name : weightShapes.keySet()) {
      ModuleKey key =
          resolver
              .resolve(name)
              .orElseThrow(
                  () ->
                      new LoraMergeException(
                          String.format(
                              Locale.ROOT,
                              "%s: cannot resolve kohya module name '%s': it is not a module of"
                                  + " %s, not in the base weights given, and not a diffusers"
                                  + " module name; give the model's weight names (baseKeys)",
                              fileName,
                              name,
                              architectureNames())));
      String previous = seen.put(key, name);
      if (previous != null) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "%s: kohya names '%s' and '%s' both name module '%s'",
                fileName,
                previous,
                name,
                key));
      }
      keys.put(name, key);
    }
    return keys;
  }

  private static String architectureNames() {
    return String.join(
        " or ", Architecture.all().stream().map(Architecture::displayName).toArray(String[]::new));
  }

  private static boolean isAnArchitecturesModule(ModuleKey key) {
    return Architecture.all().stream().anyMatch(architecture -> architecture.module(key).isPresent());
  }

  private static boolean fits(Architecture architecture, Map<String, long[]> weightShapes) {
    for (Map.Entry<String, long[]> entry : weightShapes.entrySet()) {
      Optional<ModuleSpec> spec =
          architecture.resolveKohyaName(kohyaSpelling(entry.getKey())).flatMap(architecture::module);
      if (spec.isEmpty() || !(Arrays.equals(spec.get().weightShape(), entry.getValue())
          || architecture.widensInput(spec.get().key(), entry.getValue()))) {
        return false;
      }
    }
    return !weightShapes.isEmpty();
  }

  private static Optional<ModuleKey> byArchitecture(Architecture architecture, String name) {
    return architecture.resolveKohyaName(kohyaSpelling(name));
  }

  /** OneTrainer's {@code lora_transformer_} names as kohya's {@code lora_unet_} diffusers spelling. */
  private static String kohyaSpelling(String name) {
    return name.startsWith(ONE_TRAINER_TRANSFORMER)
        ? "lora_unet_" + name.substring(ONE_TRAINER_TRANSFORMER.length())
        : name;
  }

  private static Optional<ModuleKey> byGrammar(String name) {
    for (Map.Entry<String, Component> prefix : PREFIXES.entrySet()) {
      if (name.startsWith(prefix.getKey())) {
        return DiffusersNames.toPath(name.substring(prefix.getKey().length()))
            .map(path -> ModuleKey.of(prefix.getValue(), path));
      }
    }
    return Optional.empty();
  }

  /**
   * Kohya names of the modules in a base weights file: {@code unet.}/{@code text_encoder.}
   * prefixes or bare UNet paths, {@code text_model.} for a bare text encoder. Names two keys
   * would share are left out rather than guessed.
   */
  private static Map<String, ModuleKey> baseKeyIndex(Set<String> baseKeys) {
    Map<String, ModuleKey> index = new HashMap<>();
    Set<String> ambiguous = new HashSet<>();
    for (String tensor : baseKeys) {
      if (!tensor.endsWith(".weight")) {
        continue;
      }
      ModuleKey key = baseModuleKey(tensor.substring(0, tensor.length() - ".weight".length()));
      for (String name : kohyaSpellings(key)) {
        ModuleKey previous = index.put(name, key);
        if (previous != null && !previous.equals(key)) {
          ambiguous.add(name);
        }
      }
    }
    ambiguous.forEach(index::remove);
    return index;
  }

  private static ModuleKey baseModuleKey(String path) {
    for (Component component : Component.values()) {
      String prefix = component.prefix() + ".";
      if (path.startsWith(prefix)) {
        return ModuleKey.of(component, path.substring(prefix.length()));
      }
    }
    return ModuleKey.of(path.startsWith("text_model.") ? Component.TEXT_ENCODER : Component.UNET, path);
  }

  private static String[] kohyaSpellings(ModuleKey key) {
    String underscored = key.path().replace('.', '_');
    switch (key.component()) {
      case UNET:
        return new String[] {"lora_unet_" + underscored};
      case TEXT_ENCODER:
        return new String[] {"lora_te_" + underscored, "lora_te1_" + underscored};
      case TEXT_ENCODER_2:
        return new String[] {"lora_te2_" + underscored};
      case TEXT_ENCODER_3:
        return new String[] {"lora_te3_" + underscored};
      case TRANSFORMER:
        return new String[] {"lora_unet_" + underscored, "lora_transformer_" + underscored};
      default:
        throw new AssertionError(key.component());
    }
  }

  /**
   * The names to write for {@code keys}: the detected architecture's kohya names, or underscored
   * diffusers paths ({@code lora_te1_}/{@code lora_te2_} when there is a second text encoder).
   */
  static Map<ModuleKey, String> names(LoraAdapter adapter) {
    Optional<Architecture> architecture = Architecture.detect(adapter);
    boolean twoEncoders = adapter.modules().keySet().stream().anyMatch(k -> k.component() == Component.TEXT_ENCODER_2);
    Map<ModuleKey, String> names = new LinkedHashMap<>();
    for (ModuleKey key : adapter.modules().keySet()) {
      if (architecture.isPresent()) {
        names.put(key, architecture.get().kohyaName(key));
        continue;
      }
      String underscored = key.path().replace('.', '_');
      switch (key.component()) {
        case UNET:
          names.put(key, "lora_unet_" + underscored);
          break;
        case TEXT_ENCODER:
          names.put(key, (twoEncoders ? "lora_te1_" : "lora_te_") + underscored);
          break;
        case TEXT_ENCODER_2:
          names.put(key, "lora_te2_" + underscored);
          break;
        case TEXT_ENCODER_3:
          names.put(key, "lora_te3_" + underscored);
          break;
        case TRANSFORMER:
          names.put(key, "lora_transformer_" + underscored);
          break;
        default:
          throw new AssertionError(key.component());
      }
    }
    return names;
  }
}

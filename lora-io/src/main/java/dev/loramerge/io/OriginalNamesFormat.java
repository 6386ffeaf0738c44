package dev.loramerge.io;

import com.google.common.base.Supplier;
import com.google.common.base.Suppliers;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.AdapterKind;
import dev.loramerge.Component;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.arch.NormScale;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads LoRAs whose modules are named after an original checkpoint rather than diffusers: Flux.1
 * in Black Forest Labs' names ({@code double_blocks.N.img_attn.qkv}, {@code single_blocks.N.linear1},
 * {@code img_in}, …; the {@link LoraFormat#XLABS}, {@link LoraFormat#COMFYUI} and {@link
 * LoraFormat#BFL} layouts) and SD3.5 in Stability's MMDiT names ({@code
 * joint_blocks.N.x_block.attn.qkv}, {@code final_layer.linear}, …; {@link LoraFormat#COMFYUI}).
 *
 * <p>Names are resolved by the original paths of {@link Architecture#flux()}'s, {@link
 * Architecture#sd35Medium()}'s and {@link Architecture#sd35Large()}'s modules and fused weights,
 * never by guessing: the file is read as the architecture whose names and shapes fit the most of its
 * tensors. A LoRA on a fused weight is read as its diffusers parts by {@link FusedModule#split}
 * (exact, A shared), as the kohya layout is. Biases a LoRA carries ({@code lora_B.bias}, {@code
 * .diff_b}) are bias differences, split by rows the same way. The attentions' norm scales of
 * BFL's control LoRAs ({@code double_blocks.N.img_attn.norm.query_norm.scale} …) are read as
 * {@linkplain dev.loramerge.AdapterKind#REPLACEMENT replacements} of the norms' weights. What
 * cannot be read is refused by name, never dropped unless the caller allows it: an input layer
 * whose factors are wider than the base's weight.
 */
final class OriginalNamesFormat {
  /**
   * XLabs' x-flux processors, read as diffusers' {@code _convert_xlabs_flux_lora_to_diffusers}
   * does: {@code qkv_lora1}/{@code proj_lora1} are the image stream's {@code img_attn.qkv}/{@code
   * .proj}, {@code qkv_lora2}/{@code proj_lora2} the text stream's, a single block's {@code
   * qkv_lora} is the q, k, v rows of {@code linear1} and its {@code proj_lora} is {@code linear2}.
   */
  private static final Pattern XLABS =
      Pattern.compile("(?:diffusion_model\\.)?((double|single)_blocks\\.\\d+)\\.processor\\.(qkv|proj)_lora(\\d?)\\.(down|up)\\.weight");

  /** ComfyUI's prefixes before an original name (single-file checkpoints, and its own LoRA keys). */
  private static final Pattern PREFIX = Pattern.compile("(model\\.diffusion_model\\.|diffusion_model\\.)(.+)");

  private static final Pattern TOP_LEVEL =
      Pattern.compile("(double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer)\\..+");

  /**
   * The top-level modules of SD3's MMDiT checkpoint ({@code sd3.5_large.safetensors}) that Flux's
   * has not; its {@code final_layer} is named as Flux's.
   */
  private static final Pattern SD3_TOP_LEVEL =
      Pattern.compile("(joint_blocks|x_embedder|context_embedder|t_embedder|y_embedder)\\..+");

  /**
   * CLIP-L's modules in ComfyUI's keys ({@code comfy_extras/nodes_lora_extract.py} saves a text
   * encoder's LoRA under {@code text_encoders.} plus the CLIP model's own state-dict names).
   */
  private static final String CLIP_L = "text_encoders.clip_l.transformer.";

  /**
   * The text encoders in ComfyUI's keys, by prefix, each with the components it may be in an
   * architecture: CLIP-L is the first text encoder, CLIP-G SD3's second, T5 Flux's second and
   * SD3's third (their module names tell the encoders apart).
   */
  private static final Map<String, List<Component>> TEXT_ENCODERS = Map.of(
      CLIP_L, List.of(Component.TEXT_ENCODER),
      "text_encoders.clip_g.transformer.", List.of(Component.TEXT_ENCODER_2),
      "text_encoders.t5xxl.transformer.", List.of(Component.TEXT_ENCODER_2, Component.TEXT_ENCODER_3));

  /**
   * The RMS norms' scales of the attentions (diffusers' {@code norm_q}, {@code norm_k}, {@code
   * norm_added_q/k}), which BFL's control LoRAs replace (diffusers' {@code
   * _convert_bfl_flux_control_lora_to_diffusers}; ComfyUI's {@code convert_lora_bfl_control}
   * makes them {@code "set"} patches).
   */
  private static final Pattern NORM_SCALE =
      Pattern.compile("((?:double_blocks\\.\\d+\\.(?:img|txt)_attn|single_blocks\\.\\d+)\\.norm\\.(?:query|key)_norm)\\.scale");

  /** The suffixes of an original name's tensors, longest first. */
  private static final ImmutableList<String> SUFFIXES = FormatParts.moduleSuffixes();

  /** What an original path names: a module of the architecture, or a fused weight of its parts. */
  private record Target(Optional<ModuleSpec> module, Optional<FusedModule> fused) {}

  /**
   * One tensor's place: the module as the file names it, what it updates, and what the tensor is
   * (its suffix as {@link FormatParts#collect} takes it).
   */
  private record Parsed(String moduleName, Target target, String suffix) {
    boolean isDown() {
      return suffix.equals(".lora_down.weight") || suffix.equals(".lora_A.weight");
    }

    boolean isUp() {
      return suffix.equals(".lora_up.weight") || suffix.equals(".lora_B.weight");
    }
  }

  /** Each architecture with original names, with what every original path of it names. */
  private static final Supplier<ImmutableMap<Architecture, ImmutableMap<String, Target>>> ORIGINAL_PATHS =
      Suppliers.memoize(
          () -> ImmutableList.of(Architecture.flux(), Architecture.sd35Medium(), Architecture.sd35Large()).stream()
              .collect(ImmutableMap.toImmutableMap(architecture -> architecture, OriginalNamesFormat::originalPaths)));

  private OriginalNamesFormat() {}

  private static ImmutableMap<String, Target> originalPaths(Architecture architecture) {
    Map<String, Target> paths = new HashMap<>();
    for (ModuleSpec spec : architecture.modules().values()) {
      spec.originalPath().ifPresent(path -> paths.put(path, new Target(Optional.of(spec), Optional.empty())));
    }
    architecture.fusedModules().forEach((path, fused) -> paths.put(path, new Target(Optional.empty(), Optional.of(fused))));
    return ImmutableMap.copyOf(paths);
  }

  private static ImmutableMap<String, Target> paths(Architecture architecture) {
    return ORIGINAL_PATHS.get().get(architecture);
  }

  /** The layout of a file with these tensor names, if it is one of these. */
  static Optional<LoraFormat> detect(List<String> names) {
    if (names.stream().anyMatch(name -> XLABS.matcher(name).matches())) {
      return Optional.of(LoraFormat.XLABS);
    }
    boolean prefixed = false;
    boolean bare = false;
    for (String name : names) {
      Matcher prefix = PREFIX.matcher(name);
      String path = prefix.matches() ? prefix.group(2) : name;
      // A LoRA tensor, not only norm scales: a base checkpoint in original names is no LoRA.
      if (SUFFIXES.stream().anyMatch(path::endsWith)) {
        // SD3's MMDiT names are ComfyUI's keys (its "generic" LoRA format) bare or prefixed; no
        // other tool writes them bare.
        boolean sd3 = SD3_TOP_LEVEL.matcher(path).matches();
        if (sd3 || TOP_LEVEL.matcher(path).matches()) {
          prefixed |= prefix.matches() || sd3;
          bare |= !prefix.matches() && !sd3;
        }
      }
    }
    return prefixed ? Optional.of(LoraFormat.COMFYUI) : bare ? Optional.of(LoraFormat.BFL) : Optional.empty();
  }

  static LoraAdapter read(
      SafetensorsFile file, String adapterName, LoraReadOptions options, LoraFormat layout, Map<ModuleKey, String> names) {
    String fileName = file.path().getFileName().toString();
    Architecture architecture = architecture(file, options, layout);
    FormatParts parts = new FormatParts(fileName);
    Map<String, Target> targets = new HashMap<>();
    List<LoraModule> replacements = new java.util.ArrayList<>();
    for (TensorSpec spec : file.tensors()) {
      String name = spec.name();
      Optional<Parsed> parsed = layout == LoraFormat.XLABS ? parseXlabs(name) : parseOriginal(name, architecture);
      if (parsed.isEmpty()) {
        Optional<NormScale> norm = layout == LoraFormat.XLABS ? Optional.empty() : normScale(name, architecture);
        if (norm.isPresent()) {
          replacements.add(FormatParts.normReplacement(fileName, name, norm.get(), file.tensor(name)));
          names.put(norm.get().key(), name.substring(0, name.length() - ".scale".length()));
        } else {
          parts.unsupported(name);
        }
        continue;
      }
      String module = parsed.get().moduleName();
      targets.put(module, parsed.get().target());
      parts.collect(module, parsed.get().suffix(), name, file.tensor(name));
    }
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(adapterName);
    for (FormatParts.Module module : parts.complete(options.skipUnsupported())) {
      Target target = targets.get(module.name);
      TensorData diffB = module.biasDiff;
      module.biasDiff = null;
      if (target.fused().isPresent()) {
        FusedModule fused = target.fused().get();
        LoraModule read = LycorisParts.build(
            fileName, module, ModuleKey.of(Component.TRANSFORMER, module.name), module.name, Optional.of(architecture));
        if (read.adapterKind() != AdapterKind.LORA || read.magnitude().isPresent()) {
          throw new LoraMergeException(
              String.format(
                  Locale.ROOT,
                  "%s: module '%s' updates fused weight '%s' as a %s; only a LoRA (with or without a bias difference)"
                      + " can be split into the fused weight's parts",
                  fileName, module.name, fused.originalPath(), read.kindName()));
        }
        Optional<TensorData> bias = biasDifference(fileName, module.name, read.scale(), diffB, module.loraBias);
        ImmutableList<LoraModule> split;
        ImmutableMap<ModuleKey, TensorData> biasRows;
        try {
          split = fused.split(read.down(), read.up(), read.alpha(), ScaleRule.STANDARD);
          biasRows = bias.isPresent() ? fused.splitRows(bias.get()) : ImmutableMap.of();
        } catch (LoraMergeException e) {
          throw new LoraMergeException(String.format(Locale.ROOT, "%s: module '%s': %s", fileName, module.name, e.getMessage()), e);
        }
        for (LoraModule part : split) {
          adapter.add(biasRows.containsKey(part.key()) ? part.withBiasDiff(biasRows.get(part.key())) : part);
          names.put(part.key(), FormatParts.partName(module.name, fused, part.key()));
        }
        continue;
      }
      ModuleSpec spec = target.module().orElseThrow();
      LoraModule read = LycorisParts.build(fileName, module, spec.key(), module.name, Optional.of(architecture));
      // A control LoRA's img_in takes the conditioning image's latents as more input features:
      // a fuse widens the base's weight with zero columns, as diffusers does.
      if (!Arrays.equals(read.weightShape(), spec.weightShape()) && !architecture.widensInput(spec.key(), read.weightShape())) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "%s: module '%s' updates a %s weight, but %s's '%s' is %s", fileName, module.name,
                Arrays.toString(read.weightShape()), architecture.displayName(),
                spec.originalPath().orElse(spec.key().toString()), Arrays.toString(spec.weightShape())));
      }
      Optional<TensorData> bias = biasDifference(fileName, module.name, read.scale(), diffB, module.loraBias);
      adapter.add(bias.isPresent() ? read.withBiasDiff(bias.get()) : read);
      names.put(read.key(), module.name);
    }
    replacements.forEach(adapter::add);
    adapter.putAllMetadata(file.metadata());
    return adapter.build();
  }

  /**
   * The norm scale of {@code architecture} that a tensor in original names replaces ({@code
   * double_blocks.0.img_attn.norm.query_norm.scale}, bare or under ComfyUI's prefixes), if it
   * is one.
   */
  private static Optional<NormScale> normScale(String name, Architecture architecture) {
    Matcher prefix = PREFIX.matcher(name);
    Matcher norm = NORM_SCALE.matcher(prefix.matches() ? prefix.group(2) : name);
    if (!norm.matches()) {
      return Optional.empty();
    }
    String path = norm.group(1);
    return architecture.normScales().values().stream().filter(spec -> spec.originalPath().equals(path)).findFirst();
  }

  /**
   * A module's bias difference: ComfyUI's {@code .diff_b} as it is, or PEFT's {@code lora_B.bias}
   * times the module's scale (PEFT's forward scales {@code lora_B(lora_A(x))}, bias included; 1
   * without an alpha, as in BFL's control LoRAs), in float64 where that scale is not 1.
   */
  private static Optional<TensorData> biasDifference(
      String fileName, String module, double scale, TensorData diffB, TensorData loraBias) {
    if (diffB != null && loraBias != null) {
      throw new LoraMergeException(
          String.format(Locale.ROOT, "%s: module '%s' has both a diff_b and a lora_B.bias: two bias differences", fileName, module));
    }
    if (diffB != null) {
      return Optional.of(diffB);
    }
    return loraBias == null ? Optional.empty() : Optional.of(FormatParts.loraBiasDifference(loraBias, scale));
  }

  /**
   * The architecture a file in original names is read as: Flux.1 for XLabs' layout; otherwise, of
   * the architecture given or else Flux.1, SD3.5 Medium and SD3.5 Large, the one that resolves the
   * names and fits the shapes of the most tensors (the first of equals). Flux.1 and SD3 share
   * {@code final_layer.*}, and SD3.5 Medium and Large share the names of blocks 0–23: the factors'
   * widths tell them apart.
   */
  private static Architecture architecture(SafetensorsFile file, LoraReadOptions options, LoraFormat layout) {
    String fileName = file.path().getFileName().toString();
    ImmutableList<Architecture> known = ORIGINAL_PATHS.get().keySet().asList();
    ImmutableList<Architecture> candidates =
        layout == LoraFormat.XLABS ? ImmutableList.of(Architecture.flux()) : known;
    if (options.architecture().isPresent()) {
      Architecture given = options.architecture().get();
      if (!candidates.contains(given)) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "%s: a LoRA in %s layout, which names modules of %s, but the architecture given is %s",
                fileName, layout.cliName(),
                candidates.stream().map(Architecture::displayName).collect(java.util.stream.Collectors.joining(" or ")),
                given.displayName()));
      }
      return given;
    }
    Architecture best = candidates.get(0);
    long[] bestScore = {-1, -1};
    for (Architecture candidate : candidates) {
      long fitting = 0;
      long resolved = 0;
      for (TensorSpec tensor : file.tensors()) {
        Optional<Parsed> parsed = parseOriginal(tensor.name(), candidate);
        if (parsed.isPresent()) {
          resolved++;
          fitting += fits(parsed.get(), tensor.shape()) ? 1 : 0;
        }
      }
      if (fitting > bestScore[0] || (fitting == bestScore[0] && resolved > bestScore[1])) {
        best = candidate;
        bestScore = new long[] {fitting, resolved};
      }
    }
    return best;
  }

  /** Whether a tensor's shape fits the weight its name resolves to, as far as its role tells. */
  private static boolean fits(Parsed parsed, long[] shape) {
    Target target = parsed.target();
    long in = target.module().map(ModuleSpec::inFeatures).orElseGet(() -> target.fused().orElseThrow().inFeatures());
    long out = target.module().map(ModuleSpec::outFeatures).orElseGet(() -> target.fused().orElseThrow().outFeatures());
    if (parsed.isDown()) {
      return shape.length >= 2 && shape[1] == in;
    }
    if (parsed.isUp()) {
      return shape.length >= 1 && shape[0] == out;
    }
    switch (parsed.suffix()) {
      case ".lora_B.bias":
      case LycorisParts.DIFF_B:
        return TensorData.numel(shape) == out;
      case ".diff":
        return shape.length >= 2 && shape[0] == out && shape[1] == in;
      default:
        return true;
    }
  }

  private static Optional<Parsed> parseXlabs(String name) {
    Matcher xlabs = XLABS.matcher(name);
    if (!xlabs.matches()) {
      return Optional.empty();
    }
    String block = xlabs.group(1);
    boolean qkv = xlabs.group(3).equals("qkv");
    String stream = xlabs.group(4);
    String original;
    if (xlabs.group(2).equals("double") && !stream.isEmpty()) {
      String attention = stream.equals("1") ? ".img_attn" : stream.equals("2") ? ".txt_attn" : null;
      if (attention == null) {
        return Optional.empty();
      }
      original = block + attention + (qkv ? ".qkv" : ".proj");
    } else if (xlabs.group(2).equals("single") && stream.isEmpty()) {
      original = block + (qkv ? ".linear1" : ".linear2");
    } else {
      return Optional.empty();
    }
    Target target = paths(Architecture.flux()).get(original);
    if (target == null) {
      return Optional.empty();
    }
    if (qkv && xlabs.group(2).equals("single")) {
      // x-flux's single-block qkv_lora adds to the q, k, v rows of linear1 only, not the MLP's.
      FusedModule linear1 = target.fused().orElseThrow();
      target = new Target(Optional.empty(), Optional.of(
          new FusedModule(linear1.originalPath(), linear1.inFeatures(), linear1.blockId(), linear1.segments().subList(0, 3))));
    }
    String suffix = "." + xlabs.group(5) + ".weight";
    return Optional.of(new Parsed(name.substring(0, name.length() - suffix.length()), target, ".lora_" + xlabs.group(5) + ".weight"));
  }

  private static Optional<Parsed> parseOriginal(String name, Architecture architecture) {
    Matcher prefix = PREFIX.matcher(name);
    String encoder = TEXT_ENCODERS.keySet().stream().filter(name::startsWith).findFirst().orElse(null);
    String path = encoder != null ? name.substring(encoder.length()) : prefix.matches() ? prefix.group(2) : name;
    for (String suffix : SUFFIXES) {
      if (path.endsWith(suffix)) {
        String module = path.substring(0, path.length() - suffix.length());
        Target target = encoder != null
            ? TEXT_ENCODERS.get(encoder).stream()
                .flatMap(component -> architecture.module(ModuleKey.of(component, module)).stream())
                .findFirst().map(spec -> new Target(Optional.of(spec), Optional.empty())).orElse(null)
            : paths(architecture).get(module);
        return target == null
            ? Optional.empty()
            : Optional.of(new Parsed(name.substring(0, name.length() - suffix.length()), target, suffix));
      }
    }
    return Optional.empty();
  }
}

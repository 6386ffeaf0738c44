package dev.loramerge.io;

import dev.loramerge.AdapterKind;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.NormScale;
import dev.loramerge.internal.json.Json;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/** Reads and writes diffusers pipeline LoRA files (see {@link LoraFormat#DIFFUSERS}). */
final class DiffusersFormat {
  /** The header entry where diffusers keeps each component's LoraConfig as JSON. */
  static final String METADATA_KEY = "lora_adapter_metadata";

  /** Factor suffixes, current and legacy, each with whether it is the down factor. */
  private static final String[][] FACTOR_SUFFIXES = {
    {".lora_A.weight", "down"},
    {".lora_B.weight", "up"},
    {".lora.down.weight", "down"},
    {".lora.up.weight", "up"},
    {".lora_linear_layer.down.weight", "down"},
    {".lora_linear_layer.up.weight", "up"},
  };

  /** The pre-PEFT attention processors: {@code attn1.processor.to_q_lora.down.weight}. */
  private static final Pattern PROCESSOR =
      Pattern.compile("(.+)\\.processor\\.(to_q|to_k|to_v|to_out)_lora\\.(down|up)\\.weight");

  private DiffusersFormat() {}

  /**
   * PEFT's {@code lora_bias}: lora_B's bias, which diffusers loads for BFL's control LoRAs
   * ({@code get_peft_kwargs} sets {@code lora_bias} when a {@code lora_B} bias is present); the
   * module's bias difference is it times the scale.
   */
  static final String LORA_BIAS = ".lora_B.bias";

  /** Whether the tensor names look like a diffusers pipeline file. */
  static boolean matches(Iterable<String> tensorNames) {
    for (String name : tensorNames) {
      if (component(name).isPresent()
          && (factor(name).isPresent() || PROCESSOR.matcher(name).matches())) {
        return true;
      }
    }
    return false;
  }

  private static Optional<Component> component(String name) {
    // Longest prefix first: text_encoder_2 also starts with text_encoder.
    for (Component component :
        new Component[] {
          Component.TEXT_ENCODER_3, Component.TEXT_ENCODER_2, Component.TEXT_ENCODER, Component.UNET, Component.TRANSFORMER
        }) {
      if (name.startsWith(component.prefix() + ".")) {
        return Optional.of(component);
      }
    }
    return Optional.empty();
  }

  /** The module name and factor ("down" or "up") a tensor name holds, if it is a factor. */
  private static Optional<String[]> factor(String name) {
    for (String[] suffix : FACTOR_SUFFIXES) {
      if (name.endsWith(suffix[0])) {
        return Optional.of(new String[] {name.substring(0, name.length() - suffix[0].length()), suffix[1]});
      }
    }
    var processor = PROCESSOR.matcher(name);
    if (processor.matches()) {
      String projection = processor.group(2).equals("to_out") ? "to_out.0" : processor.group(2);
      return Optional.of(new String[] {processor.group(1) + "." + projection, processor.group(3)});
    }
    return Optional.empty();
  }

  /**
   * The norm scale a tensor replaces, if it is a transformer's own norm weight ({@code
   * transformer.transformer_blocks.0.attn.norm_q.weight}): diffusers' Flux control LoRAs hold
   * the norms they train so ({@code examples/flux-control/train_control_lora_flux.py} saves them
   * beside the LoRA, and {@code FluxLoraLoaderMixin} loads the keys holding one of its {@code
   * _control_lora_supported_norm_keys} in place of the transformer's).
   */
  private static Optional<NormScale> normScale(String name) {
    String prefix = Component.TRANSFORMER.prefix() + ".";
    if (!name.startsWith(prefix) || !name.endsWith(".weight")) {
      return Optional.empty();
    }
    ModuleKey key = ModuleKey.of(Component.TRANSFORMER, name.substring(prefix.length(), name.length() - ".weight".length()));
    // Flux.1 is the one architecture with norm scales (Architecture.normScales).
    return Architecture.flux().normScale(key);
  }

  /** One component's alpha settings from {@code lora_adapter_metadata}. */
  private static final class ComponentConfig {
    OptionalDouble alpha = OptionalDouble.empty();
    final Map<String, Double> alphaPattern = new LinkedHashMap<>();
    boolean rsLora;

    OptionalDouble alphaOf(String path) {
      for (Map.Entry<String, Double> entry : alphaPattern.entrySet()) {
        if (Pattern.compile("(.*\\.)?(" + entry.getKey() + ")").matcher(path).matches()) {
          return OptionalDouble.of(entry.getValue());
        }
      }
      return alpha;
    }
  }

  private static Map<Component, ComponentConfig> readConfigs(String fileName, Map<String, String> metadata)
      throws IOException {
    Map<Component, ComponentConfig> configs = new EnumMap<>(Component.class);
    String json = metadata.get(METADATA_KEY);
    if (json == null) {
      return configs;
    }
    Map<String, Object> entries;
    try {
      entries = Json.parseObject(json);
    } catch (IOException e) {
      throw new IOException(fileName + ": " + METADATA_KEY + " is not a JSON object: " + e.getMessage(), e);
    }
    for (Component component : Component.values()) {
      String prefix = component.prefix() + ".";
      ComponentConfig config = new ComponentConfig();
      Object alpha = entries.get(prefix + "lora_alpha");
      if (alpha != null) {
        config.alpha = OptionalDouble.of(Json.number(alpha, fileName + " " + prefix + "lora_alpha"));
      }
      Object pattern = entries.get(prefix + "alpha_pattern");
      if (pattern instanceof Map) {
        for (Map.Entry<?, ?> entry : ((Map<?, ?>) pattern).entrySet()) {
          config.alphaPattern.put(
              entry.getKey().toString(),
              Json.number(entry.getValue(), fileName + " " + prefix + "alpha_pattern"));
        }
      }
      config.rsLora = Boolean.TRUE.equals(entries.get(prefix + "use_rslora"));
      configs.put(component, config);
    }
    return configs;
  }

  static LoraAdapter read(SafetensorsFile file, String adapterName, LoraReadOptions options, Map<ModuleKey, String> names)
      throws IOException {
    FormatParts parts = new FormatParts(file.path().getFileName().toString());
    Map<String, TensorData> loraBiases = new LinkedHashMap<>();
    List<LoraModule> replacements = new ArrayList<>();
    for (TensorSpec spec : file.tensors()) {
      String name = spec.name();
      Optional<String[]> factor = factor(name);
      Optional<NormScale> norm = normScale(name);
      if (norm.isPresent()) {
        replacements.add(FormatParts.normReplacement(parts.fileName(), name, norm.get(), file.tensor(name)));
        names.put(norm.get().key(), name);
      } else if (component(name).isPresent() && factor.isPresent()) {
        FormatParts.Module module = parts.module(factor.get()[0]);
        if (factor.get()[1].equals("down")) {
          module.down = file.tensor(name);
        } else {
          module.up = file.tensor(name);
        }
      } else if (component(name).isPresent() && name.endsWith(LycorisParts.MAGNITUDE)) {
        parts.module(name.substring(0, name.length() - LycorisParts.MAGNITUDE.length())).magnitudeVector = file.tensor(name);
      } else if (component(name).isPresent() && name.endsWith(LORA_BIAS)) {
        String module = name.substring(0, name.length() - LORA_BIAS.length());
        parts.module(module);
        loraBiases.put(module, file.tensor(name));
      } else if (component(name).isPresent() && name.endsWith(".alpha")) {
        parts.module(name.substring(0, name.length() - ".alpha".length())).alpha =
            OptionalDouble.of(FormatParts.alphaValue(parts.fileName(), name, file.tensor(name)));
      } else {
        parts.unsupported(name);
      }
    }
    Map<Component, ComponentConfig> configs = readConfigs(parts.fileName(), file.metadata());
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(adapterName);
    for (FormatParts.Module module : parts.complete(options.skipUnsupported())) {
      Component component = component(module.name).orElseThrow();
      String path = module.name.substring(component.prefix().length() + 1);
      ComponentConfig config = configs.getOrDefault(component, new ComponentConfig());
      double alpha =
          module.alpha.isPresent()
              ? module.alpha.getAsDouble()
              : config.alphaOf(path).orElse(module.down.dim(0));
      ScaleRule rule = config.rsLora ? ScaleRule.RSLORA : ScaleRule.STANDARD;
      LoraModule read = LoraModule.of(ModuleKey.of(component, path), module.down, module.up, alpha, rule);
      if (loraBiases.containsKey(module.name)) {
        read = read.withBiasDiff(FormatParts.loraBiasDifference(loraBiases.get(module.name), read.scale()));
      }
      adapter.add(module.magnitudeVector == null ? read : read.withMagnitude(DoraMagnitude.peft(module.magnitudeVector)));
      names.put(read.key(), module.name);
    }
    replacements.forEach(adapter::add);
    file.metadata().forEach((key, value) -> {
      if (!key.equals(METADATA_KEY)) {
        adapter.putMetadata(key, value);
      }
    });
    return adapter.build();
  }

  /**
   * The {@code lora_B.bias} whose scaled value is the module's bias difference: the difference
   * itself at scale 1, else divided by the scale in float64 where that is exact.
   *
   * @throws LoraMergeException when a value divided by the scale does not give it back exactly
   */
  static TensorData loraBias(LoraModule module) {
    TensorData difference = module.biasDiff().orElseThrow();
    double scale = module.scale();
    if (scale == 1) {
      return difference;
    }
    double[] values = difference.toDoubleArray();
    for (int i = 0; i < values.length; i++) {
      double divided = values[i] / scale;
      if (divided * scale != values[i]) {
        throw new LoraMergeException(
            String.format(
                "module '%s': its bias difference divided by the scale %s is not exact, so lora_B.bias cannot hold it;"
                    + " write it in the kohya layout", module.key(), scale));
      }
      values[i] = divided;
    }
    return TensorData.ofDoubles(values, DType.F64, difference.shape());
  }

  /**
   * Writes {@code adapter} as one diffusers file with {@code lora_A}/{@code lora_B} keys, and per
   * component r, lora_alpha, rank_pattern, alpha_pattern and use_rslora in {@code
   * lora_adapter_metadata}, which diffusers reads back into each component's LoraConfig.
   */
  static void write(LoraAdapter adapter, Path target) throws IOException {
    if (adapter.modules().isEmpty()) {
      throw new LoraMergeException("cannot write adapter '" + adapter.name() + "': it has no modules");
    }
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    Map<String, Object> config = new LinkedHashMap<>();
    for (LoraModule module : adapter.modules().values()) {
      if (module.adapterKind() == AdapterKind.REPLACEMENT) {
        // The transformer's own weight name, as diffusers' Flux control training script saves the
        // norms it trains and FluxLoraLoaderMixin loads them.
        tensors.put(module.key().component().prefix() + "." + module.key().path() + ".weight", module.replacementWeight());
      }
    }
    Map<Component, List<LoraModule>> byComponent =
        adapter.modules().values().stream()
            .filter(module -> module.adapterKind() != AdapterKind.REPLACEMENT)
            .collect(Collectors.groupingBy(m -> m.key().component(), () -> new EnumMap<>(Component.class), Collectors.toList()));
    for (Map.Entry<Component, List<LoraModule>> entry : byComponent.entrySet()) {
      String prefix = entry.getKey().prefix();
      List<LoraModule> modules = entry.getValue();
      ScaleRule rule =
          modules.stream().allMatch(m -> m.scaleRule() == ScaleRule.RSLORA) ? ScaleRule.RSLORA : ScaleRule.STANDARD;
      int rank = PeftFormat.mostCommon(modules.stream().map(LoraModule::rank).collect(Collectors.toList()));
      List<Double> alphas = new ArrayList<>();
      for (LoraModule module : modules) {
        alphas.add(rule.alphaFor(module.scale(), module.rank()));
      }
      double alpha = PeftFormat.mostCommon(alphas);
      Map<String, Object> rankPattern = new LinkedHashMap<>();
      Map<String, Object> alphaPattern = new LinkedHashMap<>();
      List<Object> targets = new ArrayList<>();
      boolean dora = false;
      boolean loraBias = false;
      for (int i = 0; i < modules.size(); i++) {
        LoraModule module = modules.get(i);
        LycorisParts.checkLoraLayout(module, "diffusers", true, true);
        String path = module.key().path();
        targets.add(path);
        if (module.rank() != rank) {
          rankPattern.put(path, (double) module.rank());
        }
        if (alphas.get(i) != alpha) {
          alphaPattern.put(path, alphas.get(i));
        }
        tensors.put(prefix + "." + path + ".lora_A.weight", module.down());
        tensors.put(prefix + "." + path + ".lora_B.weight", module.up());
        if (module.magnitude().isPresent()) {
          tensors.put(prefix + "." + path + LycorisParts.MAGNITUDE, module.magnitude().get().values());
          dora = true;
        }
        if (module.biasDiff().isPresent()) {
          tensors.put(prefix + "." + path + LORA_BIAS, loraBias(module));
          loraBias = true;
        }
      }
      if (dora && modules.stream().anyMatch(module -> module.magnitude().isEmpty())) {
        throw new LoraMergeException(
            String.format(
                "adapter '%s' has DoRA magnitudes on some %s modules only; use_dora holds for all of them",
                adapter.name(), prefix));
      }
      if (dora) {
        config.put(prefix + ".use_dora", Boolean.TRUE);
      }
      if (loraBias) {
        config.put(prefix + ".lora_bias", Boolean.TRUE);
      }
      config.put(prefix + ".alpha_pattern", alphaPattern);
      config.put(prefix + ".lora_alpha", alpha);
      config.put(prefix + ".peft_type", "LORA");
      config.put(prefix + ".r", (double) rank);
      config.put(prefix + ".rank_pattern", rankPattern);
      config.put(prefix + ".target_modules", targets);
      config.put(prefix + ".use_rslora", rule == ScaleRule.RSLORA);
    }
    Map<String, String> metadata = new LinkedHashMap<>(adapter.metadata());
    metadata.remove(METADATA_KEY);
    metadata.putIfAbsent("format", "pt");
    metadata.put(METADATA_KEY, Json.write(config, false));
    Safetensors.write(target, tensors, metadata);
  }
}

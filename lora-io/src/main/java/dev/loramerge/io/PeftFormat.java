package dev.loramerge.io;

import com.google.common.collect.ImmutableList;
import dev.loramerge.Component;
import dev.loramerge.DoraMagnitude;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.internal.json.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.function.Function;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/** Reads and writes PEFT adapter folders (see {@link LoraFormat#PEFT}). */
final class PeftFormat {
  static final String CONFIG = "adapter_config.json";
  static final String WEIGHTS = "adapter_model.safetensors";
  private static final String PREFIX = "base_model.model.";
  private static final String DOWN = ".lora_A.weight";
  private static final String UP = ".lora_B.weight";

  private PeftFormat() {}

  /** The configuration file beside a PEFT weights file or inside a PEFT folder. */
  static Optional<Path> configFor(Path path) {
    Path config = Files.isDirectory(path) ? path.resolve(CONFIG) : path.resolveSibling(CONFIG);
    return Files.isRegularFile(config) ? Optional.of(config) : Optional.empty();
  }

  /** The parsed parts of {@code adapter_config.json} this library uses. */
  private static final class Config {
    double alpha;
    Map<String, Double> alphaPattern = new LinkedHashMap<>();
    boolean rsLora;

    double alphaOf(String path) {
      for (Map.Entry<String, Double> entry : alphaPattern.entrySet()) {
        // PEFT's get_pattern_key: the pattern matches the module path or a dotted suffix of it.
        if (Pattern.compile("(.*\\.)?(" + entry.getKey() + ")").matcher(path).matches()) {
          return entry.getValue();
        }
      }
      return alpha;
    }
  }

  private static Config readConfig(Path configPath) throws IOException {
    String fileName = configPath.getParent().getFileName() + "/" + CONFIG;
    Map<String, Object> json;
    try {
      json = Json.parseObject(Files.readString(configPath, StandardCharsets.UTF_8));
    } catch (IOException e) {
      throw new IOException(fileName + ": not a valid JSON object: " + e.getMessage(), e);
    }
    Object peftType = json.getOrDefault("peft_type", "LORA");
    if (!"LORA".equals(peftType)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "%s: peft_type is %s, expected 'LORA'",
              fileName,
              Json.describe(peftType)));
    }
    Config config = new Config();
    if (!json.containsKey("lora_alpha") && !json.containsKey("r")) {
      throw new IOException(fileName + ": has neither 'r' nor 'lora_alpha'");
    }
    config.alpha =
        Json.number(json.containsKey("lora_alpha") ? json.get("lora_alpha") : json.get("r"),
            fileName + " lora_alpha");
    Object pattern = json.get("alpha_pattern");
    if (pattern instanceof Map) {
      for (Map.Entry<?, ?> entry : ((Map<?, ?>) pattern).entrySet()) {
        config.alphaPattern.put(
            entry.getKey().toString(),
            Json.number(entry.getValue(), fileName + " alpha_pattern '" + entry.getKey() + "'"));
      }
    }
    config.rsLora = Boolean.TRUE.equals(json.get("use_rslora"));
    return config;
  }

  static LoraAdapter read(Path path, String adapterName, LoraReadOptions options, Map<ModuleKey, String> names)
      throws IOException {
    Path configPath =
        configFor(path)
            .orElseThrow(() -> new IOException(path + ": no " + CONFIG + " beside the weights"));
    Config config = readConfig(configPath);
    Path weights = Files.isDirectory(path) ? path.resolve(WEIGHTS) : path;
    if (!Files.isRegularFile(weights)) {
      throw new IOException(path + ": no " + WEIGHTS + " in the PEFT folder");
    }
    try (SafetensorsFile file = SafetensorsFile.open(weights)) {
      FormatParts parts = new FormatParts(weights.getParent().getFileName() + "/" + WEIGHTS);
      Map<String, TensorData> loraBiases = new LinkedHashMap<>();
      for (TensorSpec spec : file.tensors()) {
        String name = spec.name();
        if (name.startsWith(PREFIX) && name.endsWith(DOWN)) {
          parts.module(middle(name, PREFIX, DOWN)).down = file.tensor(name);
        } else if (name.startsWith(PREFIX) && name.endsWith(UP)) {
          parts.module(middle(name, PREFIX, UP)).up = file.tensor(name);
        } else if (name.startsWith(PREFIX) && name.endsWith(LycorisParts.MAGNITUDE)) {
          parts.module(middle(name, PREFIX, LycorisParts.MAGNITUDE)).magnitudeVector = file.tensor(name);
        } else if (name.startsWith(PREFIX) && name.endsWith(DiffusersFormat.LORA_BIAS)) {
          String module = middle(name, PREFIX, DiffusersFormat.LORA_BIAS);
          parts.module(module);
          loraBiases.put(module, file.tensor(name));
        } else {
          parts.unsupported(name);
        }
      }
      LoraAdapter.Builder adapter = LoraAdapter.builder().name(adapterName);
      ScaleRule rule = config.rsLora ? ScaleRule.RSLORA : ScaleRule.STANDARD;
      for (FormatParts.Module module : parts.complete(options.skipUnsupported())) {
        Component component =
            module.name.startsWith("text_model.")
                ? Component.TEXT_ENCODER
                : module.name.startsWith("encoder.block.") ? t5(options)
                : isTransformerPath(module.name) ? Component.TRANSFORMER : Component.UNET;
        ModuleKey key = ModuleKey.of(component, module.name);
        LoraModule read = LoraModule.of(key, module.down, module.up, config.alphaOf(module.name), rule);
        if (loraBiases.containsKey(module.name)) {
          read = read.withBiasDiff(FormatParts.loraBiasDifference(loraBiases.get(module.name), read.scale()));
        }
        adapter.add(module.magnitudeVector == null ? read : read.withMagnitude(DoraMagnitude.peft(module.magnitudeVector)));
        names.put(key, PREFIX + module.name);
      }
      adapter.putAllMetadata(file.metadata());
      return adapter.build();
    }
  }

  /**
   * The component of a T5 encoder adapted alone: SD3's {@code text_encoder_3} when the caller named
   * SD3.5, else Flux's {@code text_encoder_2}, as for a kohya file that fits both.
   */
  private static Component t5(LoraReadOptions options) {
    ModuleKey sd3 = ModuleKey.of(Component.TEXT_ENCODER_3, "encoder.block.0.layer.0.SelfAttention.q");
    boolean named = options.architecture().flatMap(architecture -> architecture.module(sd3)).isPresent();
    return named ? Component.TEXT_ENCODER_3 : Component.TEXT_ENCODER_2;
  }

  /** Whether {@code path} is a module of Flux's transformer, which a PEFT folder may adapt alone. */
  private static boolean isTransformerPath(String path) {
    return Architecture.flux().module(ModuleKey.of(Component.TRANSFORMER, path)).isPresent();
  }

  private static String middle(String name, String prefix, String suffix) {
    return name.substring(prefix.length(), name.length() - suffix.length());
  }

  /**
   * Writes {@code adapter} as a PEFT folder: the most common rank and alpha become {@code r}
   * and {@code lora_alpha}, the others go to {@code rank_pattern} / {@code alpha_pattern} under
   * each module's full path, and {@code target_modules} lists every module path, so PEFT adapts
   * exactly the modules the adapter has.
   */
  static void write(LoraAdapter adapter, Path folder) throws IOException {
    List<Component> components =
        adapter.modules().keySet().stream().map(ModuleKey::component).distinct().collect(Collectors.toList());
    if (components.size() > 1) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "adapter '%s' adapts %s; a PEFT adapter holds one model: write kohya or diffusers"
                  + " format instead",
              adapter.name(),
              components.stream().map(Component::prefix).collect(Collectors.joining(" and "))));
    }
    ScaleRule rule = commonRule(adapter);
    Function<LoraModule, Double> alphaOf =
        module -> module.scaleRule() == rule ? module.alpha() : rule.alphaFor(module.scale(), module.rank());
    int rank = mostCommon(adapter.modules().values().stream().map(LoraModule::rank).collect(Collectors.toList()));
    double alpha = mostCommon(adapter.modules().values().stream().map(alphaOf).collect(Collectors.toList()));
    Map<String, Object> rankPattern = new LinkedHashMap<>();
    Map<String, Object> alphaPattern = new LinkedHashMap<>();
    List<Object> targets = new ArrayList<>();
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    boolean dora = false;
    boolean loraBias = false;
    for (LoraModule module : adapter.modules().values()) {
      LycorisParts.checkLoraLayout(module, "PEFT", true, true);
      String path = module.key().path();
      targets.add(path);
      if (module.rank() != rank) {
        rankPattern.put(path, (double) module.rank());
      }
      if (alphaOf.apply(module) != alpha) {
        alphaPattern.put(path, alphaOf.apply(module));
      }
      tensors.put(PREFIX + path + DOWN, module.down());
      tensors.put(PREFIX + path + UP, module.up());
      if (module.magnitude().isPresent()) {
        tensors.put(PREFIX + path + LycorisParts.MAGNITUDE, module.magnitude().get().values());
        dora = true;
      }
      if (module.biasDiff().isPresent()) {
        tensors.put(PREFIX + path + DiffusersFormat.LORA_BIAS, DiffusersFormat.loraBias(module));
        loraBias = true;
      }
    }
    if (dora && adapter.modules().values().stream().anyMatch(module -> module.magnitude().isEmpty())) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "adapter '%s' has DoRA magnitudes on some modules only; PEFT's use_dora holds for all of them",
              adapter.name()));
    }
    Map<String, Object> config = new LinkedHashMap<>();
    config.put("alpha_pattern", alphaPattern);
    config.put("base_model_name_or_path", null);
    config.put("bias", "none");
    config.put("fan_in_fan_out", Boolean.FALSE);
    config.put("inference_mode", Boolean.TRUE);
    config.put("init_lora_weights", Boolean.TRUE);
    config.put("lora_alpha", alpha);
    config.put("lora_dropout", 0.0);
    config.put("modules_to_save", null);
    config.put("peft_type", "LORA");
    config.put("r", (double) rank);
    config.put("rank_pattern", rankPattern);
    config.put("target_modules", targets);
    config.put("task_type", null);
    config.put("use_dora", dora);
    config.put("use_rslora", rule == ScaleRule.RSLORA);
    if (loraBias) {
      // PEFT's lora_bias: lora_B has a bias, added times the scale.
      config.put("lora_bias", Boolean.TRUE);
    }

    Map<String, String> metadata = new LinkedHashMap<>();
    metadata.put("format", "pt");
    adapter.metadata().forEach(metadata::putIfAbsent);
    metadata.remove(DiffusersFormat.METADATA_KEY);

    AtomicFolder.write(
        folder,
        staging -> {
          Safetensors.write(staging.resolve(WEIGHTS), tensors, metadata);
          Files.writeString(staging.resolve(CONFIG), Json.write(config, true) + "\n", StandardCharsets.UTF_8);
        },
        ImmutableList.of(WEIGHTS, CONFIG));
  }

  private static ScaleRule commonRule(LoraAdapter adapter) {
    return adapter.modules().values().stream().allMatch(m -> m.scaleRule() == ScaleRule.RSLORA)
            && !adapter.modules().isEmpty()
        ? ScaleRule.RSLORA
        : ScaleRule.STANDARD;
  }

  /** The most frequent value; ties go to the largest. */
  static <T extends Comparable<T>> T mostCommon(List<T> values) {
    Map<T, Long> counts = values.stream().collect(Collectors.groupingBy(v -> v, Collectors.counting()));
    return counts.entrySet().stream()
        .max(Map.Entry.<T, Long>comparingByValue().thenComparing(Map.Entry.comparingByKey(Comparator.naturalOrder())))
        .map(Map.Entry::getKey)
        .orElseThrow(() -> new LoraMergeException("cannot write an adapter with no modules"));
  }
}

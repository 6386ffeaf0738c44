package dev.loramerge.io;

import dev.loramerge.AdapterKind;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.FusedModule;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Collectors;

/** Reads and writes kohya sd-scripts / A1111 LoRA files (see {@link LoraFormat#KOHYA}). */
final class KohyaFormat {
  private static final String DOWN = ".lora_down.weight";
  private static final String UP = ".lora_up.weight";
  private static final String ALPHA = ".alpha";

  private KohyaFormat() {}

  /** Whether the tensor names look like kohya's. */
  static boolean matches(Iterable<String> tensorNames) {
    for (String name : tensorNames) {
      if (KohyaNames.component(name).isPresent() && (name.endsWith(DOWN) || name.endsWith(UP))) {
        return true;
      }
      int dot = name.indexOf('.');
      if (dot > 0 && KohyaNames.component(name.substring(0, dot)).isPresent()
          && LycorisParts.isKindSuffix(name.substring(dot))) {
        return true;
      }
    }
    return false;
  }

  static LoraAdapter read(SafetensorsFile file, String adapterName, LoraReadOptions options, Map<ModuleKey, String> names) {
    FormatParts parts = new FormatParts(file.path().getFileName().toString());
    for (TensorSpec spec : file.tensors()) {
      String name = spec.name();
      int dot = name.indexOf('.');
      String module = dot < 0 ? name : name.substring(0, dot);
      String suffix = dot < 0 ? "" : name.substring(dot);
      if (KohyaNames.component(module).isEmpty()) {
        parts.unsupported(name);
        continue;
      }
      if (FormatParts.isModuleSuffix(suffix, false)) {
        parts.collect(module, suffix, name, file.tensor(name));
      } else {
        parts.unsupported(name);
      }
    }
    var modules = parts.complete(options.skipUnsupported());
    Map<String, long[]> shapes = new LinkedHashMap<>();
    Map<String, LoraModule> built = new LinkedHashMap<>();
    Map<String, FusedModule> fused = new LinkedHashMap<>();
    for (FormatParts.Module module : modules) {
      // Built under a provisional key (the file's own name) to learn the weight's shape, which
      // the names are resolved by.
      ModuleKey provisional = ModuleKey.of(KohyaNames.component(module.name).orElseThrow(), module.name);
      LoraModule read = LycorisParts.build(parts.fileName(), module, provisional, module.name, options.architecture());
      built.put(module.name, read);
      Optional<FusedModule> fusedModule = KohyaNames.resolveFused(module.name, read.inFeatures(), options);
      if (fusedModule.isPresent()) {
        if (read.adapterKind() != AdapterKind.LORA || read.magnitude().isPresent()) {
          throw new LoraMergeException(
              String.format(
                  Locale.ROOT,
                  "%s: module '%s' updates fused weight '%s' as a %s%s; only a LoRA (with or without a bias difference)"
                      + " can be split into the fused weight's parts",
                  parts.fileName(), module.name, fusedModule.get().originalPath(), read.adapterKind().displayName(),
                  read.magnitude().isPresent() ? " with a DoRA magnitude" : ""));
        }
        fused.put(module.name, fusedModule.get());
      } else {
        shapes.put(module.name, read.weightShape());
      }
    }
    Map<String, ModuleKey> keys = KohyaNames.resolve(parts.fileName(), shapes, options);
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(adapterName);
    for (FormatParts.Module module : modules) {
      if (fused.containsKey(module.name)) {
        // A LoRA on a fused weight (Flux's img_attn.qkv, linear1) is its parts with A shared:
        // exact, and written back joined (KohyaNames.names).
        double alpha = module.alpha.orElse(module.down.dim(0));
        FusedModule fusedModule = fused.get(module.name);
        Map<ModuleKey, TensorData> biasRows = module.biasDiff == null ? Map.of() : fusedModule.splitRows(module.biasDiff);
        for (LoraModule part : fusedModule.split(module.down, module.up, alpha, ScaleRule.STANDARD)) {
          adapter.add(biasRows.containsKey(part.key()) ? part.withBiasDiff(biasRows.get(part.key())) : part);
          names.put(part.key(), FormatParts.partName(module.name, fusedModule, part.key()));
        }
      } else {
        adapter.add(built.get(module.name).withKey(keys.get(module.name)));
        names.put(keys.get(module.name), module.name);
      }
    }
    adapter.putAllMetadata(file.metadata());
    return adapter.build();
  }

  /**
   * Writes {@code adapter} as one kohya file. kohya has no rsLoRA, so every alpha is written as
   * the standard-rule alpha with the same scale (α = s·r), which keeps each update exact.
   */
  static void write(LoraAdapter adapter, Path target) throws IOException {
    adapter.modules().values().forEach(module -> LycorisParts.checkNotReplacement(module, "kohya"));
    Map<ModuleKey, String> names = KohyaNames.names(adapter);
    Optional<Architecture> architecture = Architecture.detect(adapter);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    Map<FusedModule, List<LoraModule>> fusedParts = new LinkedHashMap<>();
    for (LoraModule module : adapter.modules().values()) {
      Optional<FusedModule> fused = architecture.flatMap(arch -> arch.fusedModule(module.key()));
      if (fused.isPresent()) {
        if (module.adapterKind() != AdapterKind.LORA || module.magnitude().isPresent()) {
          throw new LoraMergeException(
              String.format(
                  Locale.ROOT,
                  "module '%s' is a part of fused weight '%s' and is a %s%s; kohya names only the fused weight, and only"
                      + " LoRA parts (with or without a bias difference) can be joined into it",
                  module.key(), fused.get().originalPath(), module.adapterKind().displayName(),
                  module.magnitude().isPresent() ? " with a DoRA magnitude" : ""));
        }
        fusedParts.computeIfAbsent(fused.get(), f -> new ArrayList<>()).add(module);
        continue;
      }
      String name = names.get(module.key());
      if (module.adapterKind() != AdapterKind.LORA || !module.isPlainLora()) {
        tensors.put(name + ALPHA, scalar(module.adapterKind() == AdapterKind.LORA
            ? ScaleRule.STANDARD.alphaFor(module.scale(), module.rank()) : module.alpha()));
        tensors.putAll(LycorisParts.kohyaTensors(module, name));
        continue;
      }
      double alpha = ScaleRule.STANDARD.alphaFor(module.scale(), module.rank());
      tensors.put(name + ALPHA, scalar(alpha));
      tensors.put(name + DOWN, module.down());
      tensors.put(name + UP, module.up());
    }
    // kohya's Flux names the original checkpoint's fused weights: parts are joined (exact; the
    // rank adds up unless the parts share A, as they do when read from a kohya file).
    for (Map.Entry<FusedModule, List<LoraModule>> entry : fusedParts.entrySet()) {
      FusedModule.Joined joined = entry.getKey().join(entry.getValue());
      String name = architecture.get().kohyaName(entry.getKey());
      double alpha = ScaleRule.STANDARD.alphaFor(joined.scaleRule().scale(joined.alpha(), joined.rank()), joined.rank());
      tensors.put(name + ALPHA, scalar(alpha));
      tensors.put(name + DOWN, joined.down());
      tensors.put(name + UP, joined.up());
      // The parts' bias differences join by rows into the fused weight's, as LyCORIS's diff_b.
      Map<ModuleKey, TensorData> biases = new LinkedHashMap<>();
      entry.getValue().forEach(part -> part.biasDiff().ifPresent(bias -> biases.put(part.key(), bias)));
      if (!biases.isEmpty()) {
        tensors.put(name + LycorisParts.DIFF_B, entry.getKey().joinRows(biases));
      }
    }
    Map<String, String> metadata = new LinkedHashMap<>(adapter.metadata());
    metadata.remove(DiffusersFormat.METADATA_KEY);
    metadata.put("ss_network_module", metadata.getOrDefault("ss_network_module", "networks.lora"));
    metadata.put("ss_network_dim", uniform(adapter, module -> number(module.rank())));
    metadata.put(
        "ss_network_alpha",
        uniform(adapter, module -> number(ScaleRule.STANDARD.alphaFor(module.scale(), module.rank()))));
    Safetensors.write(target, tensors, metadata);
  }

  /** F32 when the value is exactly a float (kohya's own choice), F64 otherwise. */
  private static TensorData scalar(double value) {
    DType dtype = (double) (float) value == value ? DType.F32 : DType.F64;
    return TensorData.ofDoubles(new double[] {value}, dtype);
  }

  private static String uniform(LoraAdapter adapter, java.util.function.Function<LoraModule, String> value) {
    var values = adapter.modules().values().stream().map(value).collect(Collectors.toSet());
    return values.size() == 1 ? values.iterator().next() : "Dynamic";
  }

  private static String number(double value) {
    return value == Math.rint(value) && Math.abs(value) < 1e15
        ? Long.toString((long) value)
        : String.format(Locale.ROOT, "%s", value);
  }
}

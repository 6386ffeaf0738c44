package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.SafetensorsWriter;
import dev.loramerge.synthetic.SyntheticLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * The benchmarks' SDXL-shaped data, driven by the SDXL architecture descriptor: attention LoRAs of
 * any rank (722 UNet modules) and an fp16 base UNet with the real diffusers key names and shapes
 * of every Linear and Conv2d weight (2.5 B parameters; biases and norms are left out), seeded and
 * written once into a cache folder that later runs reuse.
 */
final class SdxlData {
  /** The modules a kohya attention LoRA trains: everything inside the transformers. */
  private static final Set<String> ATTENTION_LEAVES =
      Set.of("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out");

  private SdxlData() {}

  /** Whether a kohya SDXL attention LoRA targets {@code spec}. */
  static boolean isAttentionTarget(ModuleSpec spec) {
    String path = spec.key().path();
    return spec.key().component() == Component.UNET
        && path.contains("attentions.")
        && ATTENTION_LEAVES.stream().anyMatch(leaf -> path.endsWith("." + leaf));
  }

  /** An fp16 attention adapter of {@code rank} and {@code alpha}. */
  static LoraAdapter adapter(String name, int rank, double alpha, long seed) {
    return adapter(name, rank, alpha, seed, Integer.MAX_VALUE);
  }

  /**
   * {@link #adapter(String, int, double, long)} over only the first {@code limit} attention modules
   * in the architecture's order (all 722 when it is larger): the same factors for those modules.
   */
  static LoraAdapter adapter(String name, int rank, double alpha, long seed, int limit) {
    Set<ModuleKey> keys =
        Architecture.sdxl().modules().values().stream()
            .filter(SdxlData::isAttentionTarget)
            .limit(limit)
            .map(ModuleSpec::key)
            .collect(Collectors.toSet());
    return SyntheticLora.builder(Architecture.sdxl())
        .modules(spec -> keys.contains(spec.key()))
        .rank(rank)
        .alpha(alpha)
        .dtype(DType.F16)
        .seed(seed)
        .name(name)
        .build();
  }

  /** {@code adapter} as a kohya file in {@code cache}, written if missing. */
  static Path kohyaFile(Path cache, LoraAdapter adapter, int rank) throws IOException {
    Path file = cache.resolve(String.format(Locale.ROOT, "%s-r%d.safetensors", adapter.name(), rank));
    if (!Files.exists(file)) {
      LoraFiles.write(adapter, file, LoraFormat.KOHYA);
    }
    return file;
  }

  /** The fp16 SDXL base UNet in {@code cache}, generated (by libtorch, seeded) if missing. */
  static Path baseUnet(Path cache) throws IOException {
    Path file = cache.resolve("sdxl-unet-base.fp16.safetensors");
    if (Files.exists(file)) {
      return file;
    }
    List<ModuleSpec> specs = new ArrayList<>();
    List<TensorSpec> entries = new ArrayList<>();
    for (ModuleSpec spec : Architecture.sdxl().modules().values()) {
      if (spec.key().component() == Component.UNET) {
        specs.add(spec);
        entries.add(new TensorSpec(spec.key().path() + ".weight", DType.F16, spec.weightShape()));
      }
    }
    System.out.printf(Locale.ROOT, "writing the SDXL base UNet (%d fp16 weights) to %s, once%n", specs.size(), file);
    try (SafetensorsWriter writer =
            SafetensorsWriter.create(file, entries, Map.of("loramerge_synthetic", "sdxl unet base, seed 7"));
        NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      ai.djl.engine.Engine.getInstance().setRandomSeed(7);
      for (ModuleSpec spec : specs) {
        try (NDManager layer = manager.newSubManager()) {
          double deviation = 1 / Math.sqrt(spec.inFeatures() * spec.kernelSize() * spec.kernelSize());
          NDArray values =
              layer.randomNormal(0, (float) deviation, new Shape(spec.weightShape()), DataType.FLOAT32)
                  .toType(DataType.FLOAT16, false);
          ByteBuffer bytes = values.toByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
          writer.write(spec.key().path() + ".weight", bytes);
        }
      }
      writer.commit();
    }
    return file;
  }
}

package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.SafetensorsWeights;
import dev.loramerge.io.SafetensorsWriter;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.synthetic.SyntheticLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code bin/lora-bench flux}: a Flux.1 LoRA fused file to file into a full-size Flux.1-dev base
 * (bf16, 23.8 GB, every Linear weight of the transformer under its BFL name, the fused {@code
 * qkv} and {@code linear1} weights included), next to a plain copy of the same file on the same
 * disk. Both write through a temporary file and force it to the disk, as the fuse does; runs
 * alternate copy and fuse, so that both see the same page cache. The data is generated once,
 * seeded, into the cache folder; the base alone needs 24 GB there, and each run writes 24 GB more
 * (deleted after it).
 *
 * <ul>
 *   <li>{@code copy/flux}: {@link Files#copy} of the base, then {@code fsync};
 *   <li>{@code fuse/flux/file}: {@link LoraFuser} from the base to a new file, with the peak heap
 *       and the process's peak RSS (the fuse holds one base tensor at a time).
 * </ul>
 */
final class FluxBench {
  static final String USAGE = "usage: bin/lora-bench flux [--runs N] [--rank R] [--blocks N] [--cache DIR] [--json FILE]";

  private FluxBench() {}

  static int run(List<String> args) throws IOException {
    int runs = 1;
    int rank = 16;
    int blocks = Integer.MAX_VALUE;
    Path cache = Path.of(System.getProperty("user.home"), ".cache", "loramerge-bench");
    Path json = null;
    for (int i = 0; i < args.size(); i++) {
      String option = args.get(i);
      if (i + 1 >= args.size()) {
        System.err.println("missing value after " + option + "\n" + USAGE);
        return 2;
      }
      String value = args.get(++i);
      switch (option) {
        case "--runs" -> runs = Integer.parseInt(value);
        case "--rank" -> rank = Integer.parseInt(value);
        case "--blocks" -> blocks = Integer.parseInt(value);
        case "--cache" -> cache = Path.of(value);
        case "--json" -> json = Path.of(value);
        default -> {
          System.err.println("unknown option " + option + "\n" + USAGE);
          return 2;
        }
      }
    }
    Files.createDirectories(cache);
    int limit = blocks;
    String suffix = blocks == Integer.MAX_VALUE ? "" : "-b" + blocks;
    Path base = base(cache.resolve("flux1-dev-base" + suffix + ".bf16.safetensors"), limit);
    LoraAdapter adapter = sharedDowns(SyntheticLora.builder(Architecture.flux())
        .modules(spec -> spec.key().component() == Component.TRANSFORMER && inBlocks(spec.key().path(), limit))
        .rank(rank)
        .alpha(rank)
        .dtype(DType.BF16)
        .seed(11)
        .name("flux-style")
        .build());
    Path lora = cache.resolve(String.format(Locale.ROOT, "flux-style-r%d%s.safetensors", rank, suffix));
    if (!Files.exists(lora)) {
      LoraFiles.write(adapter, lora, LoraFormat.KOHYA);
    }
    System.out.printf(
        Locale.ROOT, "base %s: %.2f GB; LoRA %s: %d modules, rank %d; %d CPUs%n",
        base, Files.size(base) / 1e9, lora, adapter.size(), rank, Runtime.getRuntime().availableProcessors());
    Path copy = cache.resolve("flux-copy.safetensors");
    Path fused = cache.resolve("flux-fused.safetensors");
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(lora), 1.0).build());
    Table table = new Table(1);
    for (int run = 0; run < runs; run++) {
      table.timeCold("copy/flux", () -> {
        copy(base, copy);
        return null;
      });
      Files.deleteIfExists(copy);
      FusedLora[] result = new FusedLora[1];
      table.timeCold("fuse/flux/file", () -> result[0] = fuser.fuseInto(SafetensorsWeights.of(base, fused)));
      Files.deleteIfExists(fused);
      if (!result[0].report().unmatched().isEmpty()) {
        System.err.println("the fuse left modules unmatched: " + result[0].report());
        return 1;
      }
    }
    table.print();
    if (json != null) {
      Files.writeString(json, table.json(), StandardCharsets.UTF_8);
      System.out.println("wrote " + json);
    }
    return 0;
  }

  /**
   * {@code adapter} as sd-scripts trains Flux: one module on each fused weight ({@code qkv},
   * {@code linear1}), so the parts share their down factor and the fused weight's update has the
   * adapter's rank. Parts with down factors of their own would join into a block-diagonal module
   * of three or four times the rank, and the fuse would do that much more arithmetic.
   */
  private static LoraAdapter sharedDowns(LoraAdapter adapter) {
    LoraAdapter.Builder shared = adapter.toBuilder();
    for (FusedModule fused : Architecture.flux().fusedModules().values()) {
      List<ModuleKey> parts = fused.keys().stream().filter(adapter.modules()::containsKey).toList();
      if (parts.size() > 1) {
        LoraModule first = adapter.modules().get(parts.get(0));
        for (ModuleKey part : parts.subList(1, parts.size())) {
          LoraModule module = adapter.modules().get(part);
          shared.put(LoraModule.of(part, first.down(), module.up(), module.alpha()));
        }
      }
    }
    return shared.build();
  }

  /** Whether a Flux module path is in the first {@code blocks} double and single blocks (or in none). */
  private static boolean inBlocks(String path, int blocks) {
    for (String prefix : List.of("transformer_blocks.", "single_transformer_blocks.", "double_blocks.", "single_blocks.")) {
      if (path.startsWith(prefix)) {
        return Integer.parseInt(path.substring(prefix.length(), path.indexOf('.', prefix.length()))) < blocks;
      }
    }
    return true;
  }

  /** A plain copy: through a temporary file in the same folder, forced to the disk, renamed. */
  private static void copy(Path from, Path to) throws IOException {
    Path temporary = to.resolveSibling(to.getFileName() + ".tmp");
    Files.copy(from, temporary, StandardCopyOption.REPLACE_EXISTING);
    try (FileChannel channel = FileChannel.open(temporary, StandardOpenOption.WRITE)) {
      channel.force(true);
    }
    Files.move(temporary, to, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
  }

  /**
   * The bf16 Flux.1-dev transformer base at {@code file}, generated if missing: every Linear
   * weight under its BFL name (the fused weights whole), normal values of deviation 1/√in,
   * rounded to bf16 in Java (libtorch's bf16 needs a patched JNI library).
   */
  private static Path base(Path file, int blocks) throws IOException {
    if (Files.exists(file)) {
      return file;
    }
    Map<String, long[]> weights = new LinkedHashMap<>();
    Architecture flux = Architecture.flux();
    for (ModuleSpec spec : flux.modules().values()) {
      if (spec.key().component() == Component.TRANSFORMER && spec.originalPath().isPresent() && inBlocks(spec.originalPath().get(), blocks)) {
        weights.put(spec.originalPath().get() + ".weight", spec.weightShape());
      }
    }
    for (FusedModule fused : flux.fusedModules().values()) {
      if (inBlocks(fused.originalPath(), blocks)) {
        weights.put(fused.originalPath() + ".weight", fused.weightShape());
      }
    }
    List<TensorSpec> entries = new ArrayList<>();
    weights.forEach((name, shape) -> entries.add(new TensorSpec(name, DType.BF16, shape)));
    System.out.printf(Locale.ROOT, "writing the Flux.1-dev base (%d bf16 weights) to %s, once%n", entries.size(), file);
    try (SafetensorsWriter writer = SafetensorsWriter.create(file, entries, Map.of("loramerge_synthetic", "flux.1-dev transformer base, seed 7"));
        NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Engine.getInstance().setRandomSeed(7);
      for (Map.Entry<String, long[]> weight : weights.entrySet()) {
        try (NDManager layer = manager.newSubManager()) {
          long[] shape = weight.getValue();
          NDArray values = layer.randomNormal(0, (float) (1 / Math.sqrt(shape[1])), new Shape(shape), DataType.FLOAT32);
          writer.write(weight.getKey(), bfloat16(values.toByteBuffer().order(ByteOrder.nativeOrder())));
        }
      }
      writer.commit();
    }
    return file;
  }

  /** {@code floats} (float32, native order) rounded to bf16, nearest even, little-endian. */
  private static ByteBuffer bfloat16(ByteBuffer floats) {
    int count = floats.remaining() / Float.BYTES;
    ByteBuffer out = ByteBuffer.allocate(count * 2).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < count; i++) {
      int bits = floats.getInt(i * Float.BYTES);
      out.putShort(i * 2, (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16));
    }
    return out;
  }
}

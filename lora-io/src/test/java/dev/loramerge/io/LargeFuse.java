package dev.loramerge.io;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Run in its own JVM with a small heap by {@link SafetensorsWeightsTest}: writes a base of twelve
 * 2048×4096 fp16 weights (200 MB) tensor by tensor, then fuses a rank-8 adapter over six of them.
 */
public final class LargeFuse {
  private static final int LAYERS = 12;
  private static final int OUT = 2048;
  private static final int IN = 4096;

  private LargeFuse() {}

  public static void main(String[] args) throws IOException {
    Path base = Path.of(args[0]);
    Path output = Path.of(args[1]);
    List<TensorSpec> entries = new ArrayList<>();
    entries.add(new TensorSpec("untouched", DType.F16, new long[] {OUT, IN}));
    for (int i = 0; i < LAYERS; i++) {
      entries.add(new TensorSpec("layers." + i + ".proj.weight", DType.F16, new long[] {OUT, IN}));
    }
    ByteBuffer values = ByteBuffer.allocateDirect(OUT * IN * 2).order(ByteOrder.LITTLE_ENDIAN);
    SplittableRandom random = new SplittableRandom(3);
    try (SafetensorsWriter writer = SafetensorsWriter.create(base, entries, Map.of())) {
      for (TensorSpec entry : entries) {
        for (int i = 0; i < OUT * IN; i++) {
          values.putShort(i * 2, FloatFormats.toFloat16(0.05 * (random.nextDouble() - 0.5)));
        }
        writer.write(entry.name(), values.duplicate());
      }
      writer.commit();
    }
    LoraAdapter.Builder adapter = LoraAdapter.builder().name("large");
    for (int i = 0; i < LAYERS; i += 2) {
      adapter.add(
          LoraModule.of(
              ModuleKey.of(Component.UNET, "layers." + i + ".proj"),
              gaussian(random, 8, IN),
              gaussian(random, OUT, 8),
              8));
    }
    FusedLora fused =
        LoraFuser.of(LoraMerger.builder().add(adapter.build(), 0.7).build()).fuseInto(SafetensorsWeights.of(base, output));
    System.out.println("fused " + fused.report().matched().size() + " modules; max heap "
        + Runtime.getRuntime().maxMemory() / (1 << 20) + " MB");
  }

  private static TensorData gaussian(SplittableRandom random, int rows, int columns) {
    float[] values = new float[rows * columns];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (0.01 * (random.nextDouble() - 0.5));
    }
    return TensorData.ofFloats(values, rows, columns);
  }
}

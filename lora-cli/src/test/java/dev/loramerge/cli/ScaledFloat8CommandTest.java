package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.testing.Float8Reference;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code lora fuse} and {@code unfuse --original} on a ComfyUI "fp8_scaled" base (comfy/ops.py
 * {@code scaled_fp8_ops}: a root {@code scaled_fp8} marker, float32 {@code X.scale_weight} beside
 * each F8_E4M3 {@code X.weight}, the weight being {@code weight * scale_weight}); the exact
 * roundings are checked in lora-io's {@code ScaledFloat8FuseTest}.
 */
class ScaledFloat8CommandTest {
  @TempDir Path temp;

  private final CommandRun command = new CommandRun();
  private final LoraAdapter style = TinyLora.adapter("style", 4, 4, 1);

  @Test
  void fusesTheScaledWeightsKeepingTheScalesAndUnfusesByteForByte() throws IOException {
    Path base = base(Map.of());
    Path adapter = temp.resolve("style");
    LoraFiles.write(style, adapter, LoraFormat.PEFT);
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), adapter + "=0.01"))
        .as("stderr: %s", command.err()).isZero();
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      for (ModuleKey key : TinyLora.KEYS) {
        String name = key.path() + ".weight";
        double scale = before.tensor(key.path() + ".scale_weight").toDoubleArray()[0];
        assertThat(after.tensor(key.path() + ".scale_weight").bytes()).as("scale of %s", name)
            .isEqualTo(before.tensor(key.path() + ".scale_weight").bytes());
        // Each written value is the real fused weight within half a float8 step of stored units.
        double[] delta = TinyLora.weightedSum(key, new LoraAdapter[] {style}, new double[] {0.01});
        ByteBuffer stored = before.tensor(name).bytes();
        ByteBuffer written = after.tensor(name).bytes();
        for (int i = 0; i < delta.length; i++) {
          double expected = Float8Reference.decode(true, stored.get(i) & 0xff) * scale + delta[i];
          double actual = Float8Reference.decode(true, written.get(i) & 0xff) * scale;
          // e4m3 keeps 3 fraction bits (2⁻⁴ relative), its subnormals are 2⁻⁹ apart.
          assertThat(Math.abs(actual - expected)).as("%s[%d]: %s for %s", name, i, actual, expected)
              .isLessThanOrEqualTo(Math.max(0x1p-4 * Math.abs(expected), 0x1p-10 * scale));
        }
        assertThat(written).as("fused %s", name).isNotEqualTo(stored);
      }
    }
    Path restored = temp.resolve("restored.safetensors");
    assertThat(command.run("unfuse", "--base", fused.toString(), "-o", restored.toString(), "--original", base.toString(), adapter + "=0.01"))
        .as("stderr: %s", command.err()).isZero();
    assertThat(Files.readAllBytes(restored)).as("restored file").isEqualTo(Files.readAllBytes(base));
  }

  @Test
  void aQuantizationLayoutItDoesNotKnowFailsInOneLineNamingTheTensor() throws IOException {
    String absmax = TinyLora.KEYS[1].path() + ".weight.absmax";
    Path base = base(Map.of(absmax, TensorData.ofFloats(new float[] {1f})));
    Path adapter = temp.resolve("style");
    LoraFiles.write(style, adapter, LoraFormat.PEFT);
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), adapter + "=0.8"))
        .as("stderr: %s", command.err()).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err().trim()).isEqualTo("lora: base.safetensors: tensor '" + absmax + "' is quantization state of a"
        + " layout that cannot be fused (only float8 with a float scale can), beside weight '" + TinyLora.KEYS[1].path()
        + ".weight'; fuse into an unquantized base");
    try (Stream<Path> files = Files.list(temp)) {
      assertThat(files.map(path -> path.getFileName().toString())).as("files left behind")
          .containsExactlyInAnyOrder("base.safetensors", "style");
    }
  }

  /**
   * TinyLora's base in F8_E4M3, each weight stored over its own float32 scale (its largest value
   * stored near 224, leaving the update room below 448), plus {@code extra}.
   */
  private Path base(Map<String, TensorData> extra) throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("scaled_fp8", TensorData.of(DType.F8_E4M3, new long[] {0}, ByteBuffer.allocate(0)));
    Random random = new Random(7);
    for (Map.Entry<String, TensorData> weight : TinyLora.base(DType.F32, 3).entrySet()) {
      double[] values = weight.getValue().toDoubleArray();
      double largest = 0;
      for (double value : values) {
        largest = Math.max(largest, Math.abs(value));
      }
      float scale = (float) (largest / 224 * (1 + 0.01 * random.nextDouble()));
      double[] stored = new double[values.length];
      for (int i = 0; i < values.length; i++) {
        stored[i] = values[i] / scale;
      }
      String module = weight.getKey().substring(0, weight.getKey().length() - ".weight".length());
      tensors.put(weight.getKey(), TensorData.ofDoubles(stored, DType.F8_E4M3, weight.getValue().shape()));
      tensors.put(module + ".scale_weight", TensorData.ofFloats(new float[] {scale}));
    }
    tensors.putAll(extra);
    Path base = temp.resolve("base.safetensors");
    Safetensors.write(base, tensors, Map.of("modelspec.title", "tiny"));
    return base;
  }
}

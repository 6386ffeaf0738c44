package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.Float8Reference;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.OptionalInt;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * {@code lora fuse --dtype fp8|fp8_e5m2} as a user runs it: every value of the output is the
 * exact float64 value (the fused sum for a module's weight, the base's value for the rest) rounded
 * once to the float8 type, checked against the OCP OFP8 definition ({@link Float8Reference}); a
 * value beyond the type's range fails in one line naming its tensor and leaves no output. (A
 * merge, which writes LoRA factors, refuses float8: {@link MergeCommandTest}.)
 */
class Float8OutputCommandTest {
  /** Not a module of the adapter: converted as it is, and where the boundary values go. */
  private static final String UNTOUCHED = "time_embedding.linear_1.bias";
  private static final double WEIGHT = 0.7;

  @TempDir Path temp;

  private final CommandRun command = new CommandRun();
  private final LoraAdapter style = TinyLora.adapter("style", 4, 4, 1);

  /** TinyLora's base in {@code dtype} with {@link #UNTOUCHED} holding {@code extra} in float32. */
  private Path base(DType dtype, float... extra) throws IOException {
    Map<String, TensorData> weights = new LinkedHashMap<>(TinyLora.base(dtype, 3));
    weights.put(UNTOUCHED, TensorData.ofFloats(extra, extra.length));
    Path base = temp.resolve("base.safetensors");
    Safetensors.write(base, weights, Map.of("modelspec.title", "tiny"));
    return base;
  }

  private Path adapter() throws IOException {
    Path adapter = temp.resolve("style");
    LoraFiles.write(style, adapter, LoraFormat.PEFT);
    return adapter;
  }

  private static int code(TensorData tensor, int index) {
    return tensor.bytes().get(index) & 0xff;
  }

  private static int expectedCode(boolean e4m3, double exact, String what) {
    OptionalInt code = Float8Reference.nearest(e4m3, exact);
    assertThat(code).as("%s = %s is in range", what, exact).isPresent();
    return code.getAsInt();
  }

  @ParameterizedTest
  @CsvSource({"BF16, fp8, F8_E4M3", "F32, fp8_e5m2, F8_E5M2", "F8_E4M3, fp8_e5m2, F8_E5M2", "F16, f8_e4m3, F8_E4M3"})
  void fuseRoundsEveryValueOnceFromItsExactValue(DType baseType, String name, DType outputType) throws IOException {
    boolean e4m3 = outputType == DType.F8_E4M3;
    Path base = base(baseType, 1.5f, -0.3f, Float.NaN);
    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), "--dtype", name, adapter() + "=" + WEIGHT))
        .as("fuse exit code; stderr: %s", command.err())
        .isZero();
    Map<String, ModuleKey> modules =
        Stream.of(TinyLora.KEYS).collect(Collectors.toMap(key -> key.path() + ".weight", key -> key));
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      assertThat(after.tensors()).extracting(TensorSpec::dtype).as("every tensor's dtype").containsOnly(outputType);
      for (TensorSpec spec : before.tensors()) {
        String tensor = spec.name();
        double[] exact = before.tensor(tensor).toDoubleArray();
        if (modules.containsKey(tensor)) {
          double[] delta = TinyLora.weightedSum(modules.get(tensor), new LoraAdapter[] {style}, new double[] {WEIGHT});
          for (int i = 0; i < exact.length; i++) {
            exact[i] += delta[i];
          }
        }
        TensorData actual = after.tensor(tensor);
        for (int i = 0; i < exact.length; i++) {
          if (Double.isNaN(exact[i])) {
            assertThat(Float8Reference.decode(e4m3, code(actual, i))).as("%s[%d], the base's NaN", tensor, i).isNaN();
            continue;
          }
          assertThat(code(actual, i))
              .as("%s[%d], exact %s", tensor, i, exact[i])
              .isEqualTo(expectedCode(e4m3, exact[i], tensor + "[" + i + "]"));
        }
      }
      assertThat(after.metadata()).containsEntry("modelspec.title", "tiny");
      assertThat(after.metadata().get(LoraMerger.RECIPE_KEY))
          .as("the recipe records the output's dtype")
          .contains("\"operation\":\"fuse\",\"dtype\":\"" + outputType.safetensorsName() + "\"");
    }
  }

  /**
   * The last value each format rounds into range, and the first it cannot hold: e4m3fn's 448 takes
   * everything up to 464, the tie (0x7e is even), but not the float32 above it; e5m2's 57344
   * takes the float32 below 61440, but not the tie (0x7b is odd).
   */
  @ParameterizedTest
  @CsvSource({"fp8, F8_E4M3, 464, 464.00003", "fp8_e5m2, F8_E5M2, 61439.996, 61440"})
  void aValueBeyondTheRangeFailsNamingItsTensorAndLeavesNoOutput(String name, DType type, float last, float beyond)
      throws IOException {
    boolean e4m3 = type == DType.F8_E4M3;
    Path adapter = adapter();
    Path kept = temp.resolve("kept.safetensors");
    assertThat(command.run("fuse", "--base", base(DType.F32, 1, -last).toString(), "-o", kept.toString(), "--dtype", name, adapter + "=1"))
        .as("stderr: %s", command.err())
        .isZero();
    try (SafetensorsFile file = SafetensorsFile.open(kept)) {
      assertThat(Float8Reference.decode(e4m3, code(file.tensor(UNTOUCHED), 1))).as("-%s", last).isEqualTo(-Float8Reference.max(e4m3));
    }
    Files.delete(kept);

    Path fused = temp.resolve("fused.safetensors");
    int exit = command.run("fuse", "--base", base(DType.F32, 1, beyond).toString(), "-o", fused.toString(), "--dtype", name, adapter + "=1");
    assertThat(exit).as("exit code; stderr: %s", command.err()).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err().trim())
        .isEqualTo(
            "lora: base.safetensors: tensor '" + UNTOUCHED + "': value " + (double) beyond + " at element 1 is beyond the"
                + " range of " + type.safetensorsName() + "; write it as a wider type");
    assertThat(fused).doesNotExist();
    try (Stream<Path> files = Files.list(temp)) {
      assertThat(files.map(path -> path.getFileName().toString())).as("files left behind").containsExactlyInAnyOrder("base.safetensors", "style");
    }
  }

  @Test
  void aFusedValueBeyondTheRangeFailsNamingItsModuleAndLeavesNoOutput() throws IOException {
    Path fused = temp.resolve("fused.safetensors");
    int exit = command.run("fuse", "--base", base(DType.BF16, 1).toString(), "-o", fused.toString(), "--dtype", "fp8", adapter() + "=1000");
    assertThat(exit).as("exit code; stderr: %s", command.err()).isEqualTo(3);
    assertThat(command.err().lines()).as("stderr: %s", command.err()).hasSize(1);
    assertThat(command.err())
        .startsWith("lora: base.safetensors: module 'unet.down_blocks.0.")
        .containsPattern("\\(weight '[^']+\\.weight'\\): fused value -?[0-9.E]+ at element [0-9]+ is beyond the range of F8_E4M3");
    try (Stream<Path> files = Files.list(temp)) {
      assertThat(files.map(path -> path.getFileName().toString())).as("files left behind").containsExactlyInAnyOrder("base.safetensors", "style");
    }
  }
}

package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.synthetic.SyntheticLora;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Fusing file to file: exact results, byte-identical restores, and no output on any failure. */
class SafetensorsWeightsTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter DETAIL = TinyLora.adapter("detail", 3, 3, 3);

  @TempDir Path folder;

  @Test
  void fuseThenUnfuseWithTheOriginalRestoresTheFileByteForByte() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser merger = LoraFuser.builder().merger(LoraMerger.builder().add(STYLE, 0.8).add(DETAIL, -0.4).build()).scale(0.9).build();
    merger.fuseInto(SafetensorsWeights.of(base, fused));
    assertThat(Files.readAllBytes(fused)).as("fused file").isNotEqualTo(Files.readAllBytes(base));
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      assertThat(file.metadata()).containsKey(LoraMerger.RECIPE_KEY).containsEntry("origin", "test");
      assertThat(file.metadata().get(LoraMerger.RECIPE_KEY)).contains("\"operation\":\"fuse\"").contains("\"scale\":0.9");
    }
    Path restored = folder.resolve("restored.safetensors");
    merger.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    assertThat(Files.readAllBytes(restored)).as("restored file").isEqualTo(Files.readAllBytes(base));
  }

  @Test
  void restoringWithOtherInputsFailsAndWritesNothing() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser.of(LoraMerger.builder().add(STYLE, 0.8).build()).fuseInto(SafetensorsWeights.of(base, fused));
    Path restored = folder.resolve("restored.safetensors");
    assertThatThrownBy(
            () -> LoraFuser.of(LoraMerger.builder().add(STYLE, 0.7).build()).fuseInto(SafetensorsWeights.restoring(fused, base, restored)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("is not base.safetensors with these inputs fused");
    assertThat(folderContents()).containsExactlyInAnyOrder("base.safetensors", "fused.safetensors");
  }

  @Test
  void bf16IsTheExactSumRoundedOnce() throws IOException {
    Path base = writeBase(DType.BF16, "base.safetensors");
    Path fused = folder.resolve("fused.safetensors");
    FusedLora result = LoraFuser.of(LoraMerger.builder().add(STYLE, 0.8).build()).fuseInto(SafetensorsWeights.of(base, fused));
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      for (Map.Entry<ModuleKey, String> match : result.report().matched().entrySet()) {
        double[] expected = before.tensor(match.getValue()).toDoubleArray();
        double[] delta = TinyLora.weightedSum(match.getKey(), new LoraAdapter[] {STYLE}, new double[] {0.8});
        TensorData actual = after.tensor(match.getValue());
        for (int i = 0; i < expected.length; i++) {
          assertThat(actual.bytes().getShort(i * 2))
              .as("%s[%d]", match.getValue(), i)
              .isEqualTo(FloatFormats.toBFloat16(expected[i] + delta[i]));
        }
      }
      assertThat(after.tensor("conv_in.weight")).isEqualTo(before.tensor("conv_in.weight"));
    }
  }

  @Test
  void convertsTheOutputDType() throws IOException {
    Path base = writeBase(DType.F32, "base.safetensors");
    Path fused = folder.resolve("fused.safetensors");
    FusedLora result =
        LoraFuser.of(LoraMerger.builder().add(STYLE, 0.8).build()).fuseInto(SafetensorsWeights.of(base, fused).withDType(DType.F16));
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      assertThat(after.tensor("conv_in.weight")).isEqualTo(before.tensor("conv_in.weight").to(DType.F16));
      String name = result.report().matched().values().iterator().next();
      ModuleKey key = result.report().matched().keySet().iterator().next();
      double[] expected = before.tensor(name).toDoubleArray();
      double[] delta = TinyLora.weightedSum(key, new LoraAdapter[] {STYLE}, new double[] {0.8});
      for (int i = 0; i < expected.length; i++) {
        expected[i] += delta[i];
      }
      assertThat(after.tensor(name)).isEqualTo(TensorData.ofDoubles(expected, DType.F16, before.tensor(name).shape()));
    }
  }

  @Test
  void anOverflowingFuseWritesNothing() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    Path fused = folder.resolve("fused.safetensors");
    assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(STYLE, 1e5).build()).fuseInto(SafetensorsWeights.of(base, fused)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageStartingWith("base.safetensors: module 'unet.")
        .hasMessageContaining("beyond the range of F16");
    assertThat(folderContents()).containsExactly("base.safetensors");
  }

  @Test
  void anAdapterForAnotherArchitectureFails() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    LoraAdapter sdxl =
        SyntheticLora.builder(Architecture.sdxl()).modules(spec -> spec.key().path().endsWith("attn2.to_k")).build();
    assertThatThrownBy(
            () -> LoraFuser.of(LoraMerger.builder().add(sdxl, 1).build()).fuseInto(SafetensorsWeights.of(base, folder.resolve("out.safetensors"))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("has a weight in the target")
        .hasMessageContaining("another architecture");
    assertThat(folderContents()).containsExactly("base.safetensors");
  }

  @Test
  void aTruncatedBaseFailsBeforeWriting() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    byte[] bytes = Files.readAllBytes(base);
    Path truncated = folder.resolve("truncated.safetensors");
    Files.write(truncated, java.util.Arrays.copyOf(bytes, bytes.length - 100));
    assertThatThrownBy(() -> SafetensorsWeights.of(truncated, folder.resolve("out.safetensors")))
        .isInstanceOf(SafetensorsFormatException.class)
        .hasMessageStartingWith("truncated.safetensors: ");
    assertThat(folderContents()).containsExactlyInAnyOrder("base.safetensors", "truncated.safetensors");
  }

  @Test
  void anInterruptedWriteLeavesNoOutput() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser merger =
        LoraFuser.of(LoraMerger.builder()
            .add(STYLE, 0.5)
            .listener(
                new dev.loramerge.merge.MergeListener() {
                  @Override
                  public void moduleMerged(int done, int total, ModuleKey key) {}

                  @Override
                  public void weightsWritten(long done, long total) {
                    if (done > total / 2) {
                      throw new IllegalStateException("interrupted at " + done + " of " + total);
                    }
                  }
                })
            .build());
    assertThatThrownBy(() -> merger.fuseInto(SafetensorsWeights.of(base, fused)))
        .isInstanceOf(IllegalStateException.class)
        .hasMessageStartingWith("interrupted");
    assertThat(folderContents()).containsExactly("base.safetensors");
  }

  @Test
  void theOutputCannotBeTheBase() throws IOException {
    Path base = writeBase(DType.F16, "base.safetensors");
    assertThatThrownBy(() -> SafetensorsWeights.of(base, base))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("inputs are never modified");
  }

  /** A base of about 200 MB fuses in a JVM with a 64 MB heap (and so at most 64 MB of direct buffers). */
  @Test
  void aFileLargerThanTheHeapFusesWithBoundedMemory() throws Exception {
    Path base = folder.resolve("large.safetensors");
    Path output = folder.resolve("large-fused.safetensors");
    Process process =
        new ProcessBuilder(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx64m",
                "-Dai.djl.offline=true",
                "-cp",
                System.getProperty("java.class.path"),
                LargeFuse.class.getName(),
                base.toString(),
                output.toString())
            .redirectErrorStream(true)
            .start();
    String log = new String(process.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
    assertThat(process.waitFor(5, TimeUnit.MINUTES)).isTrue();
    assertThat(process.exitValue()).as("exit value; output:%n%s", log).isZero();
    assertThat(Files.size(base)).isGreaterThan(3 * 64L << 20);
    assertThat(log).contains("fused 6 modules");
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(output)) {
      assertThat(after.tensors()).isEqualTo(before.tensors());
      assertThat(after.tensor("untouched")).isEqualTo(before.tensor("untouched"));
      assertThat(after.tensor("layers.0.proj.weight")).isNotEqualTo(before.tensor("layers.0.proj.weight"));
    }
  }

  private Path writeBase(DType dtype, String name) throws IOException {
    Path path = folder.resolve(name);
    Safetensors.write(path, TinyLora.base(dtype, 13), Map.of("origin", "test"));
    return path;
  }

  private List<String> folderContents() throws IOException {
    try (Stream<Path> files = Files.list(folder)) {
      List<String> names = new ArrayList<>();
      files.forEach(file -> names.add(file.getFileName().toString()));
      return names;
    }
  }
}

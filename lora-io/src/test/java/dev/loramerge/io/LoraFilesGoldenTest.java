package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorSpec;
import dev.loramerge.testing.GoldenFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Conversions against PEFT 0.21's own files: the kohya and PEFT copies of each golden adapter
 * must give the same update s·B·A for every module, exactly, in every direction.
 */
class LoraFilesGoldenTest {
  @TempDir Path temp;

  private static LoraAdapter kohya(String name) throws IOException {
    return LoraFiles.read(GoldenFiles.peft021("kohya/" + name + ".safetensors"));
  }

  private static LoraAdapter peft(String name) throws IOException {
    return LoraFiles.read(GoldenFiles.peft021("adapters/" + name));
  }

  @ParameterizedTest
  @ValueSource(strings = {"style", "subject", "detail"})
  void detectsTheGoldenFormats(String name) throws IOException {
    assertThat(LoraFiles.detect(GoldenFiles.peft021("kohya/" + name + ".safetensors"))).isEqualTo(LoraFormat.KOHYA);
    assertThat(LoraFiles.detect(GoldenFiles.peft021("adapters/" + name))).isEqualTo(LoraFormat.PEFT);
    assertThat(LoraFiles.detect(GoldenFiles.peft021("adapters/" + name + "/adapter_model.safetensors")))
        .isEqualTo(LoraFormat.PEFT);
  }

  @ParameterizedTest
  @ValueSource(strings = {"style", "subject", "detail"})
  void kohyaAndPeftCopiesHoldTheSameUpdates(String name) throws IOException {
    LoraAdapter kohya = kohya(name);
    LoraAdapter peft = peft(name);
    assertThat(kohya.size()).as("module count").isEqualTo(28);
    assertSameUpdates(kohya, peft);
  }

  @ParameterizedTest
  @ValueSource(strings = {"style", "subject", "detail"})
  void kohyaToPeftIsExact(String name) throws IOException {
    Path out = temp.resolve(name + "-peft");
    LoraFiles.write(kohya(name), out, LoraFormat.PEFT);
    assertThat(out.resolve("adapter_config.json")).isRegularFile();
    assertSameUpdates(LoraFiles.read(out), peft(name));
  }

  @ParameterizedTest
  @ValueSource(strings = {"style", "subject", "detail"})
  void peftToKohyaIsExact(String name) throws IOException {
    Path out = temp.resolve(name + ".safetensors");
    LoraFiles.write(peft(name), out, LoraFormat.KOHYA);
    LoraAdapter converted = LoraFiles.read(out);
    assertSameUpdates(converted, kohya(name));
    try (SafetensorsFile written = SafetensorsFile.open(out);
        SafetensorsFile golden = SafetensorsFile.open(GoldenFiles.peft021("kohya/" + name + ".safetensors"))) {
      assertThat(written.tensors().stream().map(TensorSpec::name).sorted())
          .as("the same kohya tensor names as PEFT's own conversion")
          .containsExactlyElementsOf(golden.tensors().stream().map(TensorSpec::name).sorted().toList());
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"style", "subject", "detail"})
  void throughDiffusersNamingIsExact(String name) throws IOException {
    Path diffusers = temp.resolve(name + "-diffusers.safetensors");
    LoraFiles.write(kohya(name), diffusers, LoraFormat.DIFFUSERS);
    assertThat(LoraFiles.detect(diffusers)).isEqualTo(LoraFormat.DIFFUSERS);
    LoraAdapter viaDiffusers = LoraFiles.read(diffusers);
    assertSameUpdates(viaDiffusers, peft(name));
    Path back = temp.resolve(name + "-back.safetensors");
    LoraFiles.write(viaDiffusers, back, LoraFormat.KOHYA);
    assertSameUpdates(LoraFiles.read(back), kohya(name));
  }

  @ParameterizedTest
  @ValueSource(strings = {"kohya", "peft", "diffusers"})
  void readWriteReadIsByteStable(String formatName) throws IOException {
    LoraFormat format = LoraFormat.fromCliName(formatName).orElseThrow();
    for (String name : new String[] {"style", "subject", "detail"}) {
      Path first = temp.resolve(name + "-1-" + formatName);
      Path second = temp.resolve(name + "-2-" + formatName);
      LoraFiles.write(kohya(name), first, format);
      LoraFiles.write(LoraFiles.read(first), second, format);
      if (format == LoraFormat.PEFT) {
        assertSameBytes(first.resolve("adapter_model.safetensors"), second.resolve("adapter_model.safetensors"));
        assertSameBytes(first.resolve("adapter_config.json"), second.resolve("adapter_config.json"));
      } else {
        assertSameBytes(first, second);
      }
    }
  }

  private static void assertSameBytes(Path first, Path second) throws IOException {
    assertThat(Arrays.equals(Files.readAllBytes(first), Files.readAllBytes(second)))
        .as("%s and %s are byte-identical", first.getFileName(), second.getFileName())
        .isTrue();
  }

  /** The first index where the arrays differ, or -1 (AssertJ's containsExactly is quadratic here). */
  static int firstDifference(double[] actual, double[] expected) {
    if (actual.length != expected.length) {
      return Math.min(actual.length, expected.length);
    }
    for (int i = 0; i < expected.length; i++) {
      if (Double.compare(actual[i], expected[i]) != 0) {
        return i;
      }
    }
    return -1;
  }

  static void assertSameUpdates(LoraAdapter actual, LoraAdapter expected) {
    assertThat(actual.modules().keySet()).as("module keys").isEqualTo(expected.modules().keySet());
    for (ModuleKey key : expected.modules().keySet()) {
      LoraModule want = expected.modules().get(key);
      LoraModule got = actual.modules().get(key);
      assertThat(got.scale()).as("scale of %s", key).isEqualTo(want.scale());
      assertThat(firstDifference(got.deltaF64(), want.deltaF64())).as("first element where s·B·A of %s differs", key).isEqualTo(-1);
    }
  }
}

package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.internal.numeric.FloatFormats;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.io.SafetensorsWeights;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.testing.GoldenFiles;
import dev.loramerge.testing.TinyLora;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Fusing into PEFT's golden base files. In fp32 the fused weights must match what PEFT's {@code
 * merge_and_unload} writes, the base plus its merged adapter's update (derived here in float64
 * from PEFT's merged factors, which differs from PEFT's float32 sum by float32 rounding), within
 * 1e-6 relative per tensor, except for svd: PEFT truncates the float32 delta with a float32
 * SVD, a few 1e-6 off the exact truncation, so there the fuse must be within 1e-6 of the exact
 * float64 truncation (an EJML SVD of the full delta) and within 2e-5 of PEFT. In fp16 every
 * element must be the float64 sum W + ΔW rounded once to fp16 (PEFT's own fp16 fuse is not: it
 * rounds the factors first). Tensors no module touches must be byte-identical to the base.
 */
class FuseGoldenTest {
  private static final Map<String, LoraAdapter> ADAPTERS = new java.util.HashMap<>();

  @TempDir Path folder;

  static Stream<Map<String, Object>> fusedCases() throws IOException {
    return PeftGoldenTest.deterministicCases()
        .filter(c -> c.get("id").equals("cat_abc") || c.get("id").equals("ties_ab_total") || c.get("id").equals("svd_abc"));
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("fusedCases")
  void fp32MatchesPeftAndKeepsUntouchedBytes(Map<String, Object> goldenCase) throws IOException {
    String id = (String) goldenCase.get("id");
    Path output = folder.resolve(id + ".fp32.safetensors");
    FusedLora fused =
        LoraFuser.of(PeftGoldenTest.merger(goldenCase, PeftGoldenTest.algorithm(goldenCase)).build())
            .fuseInto(SafetensorsWeights.of(GoldenFiles.peft021("base.fp32.safetensors"), output));
    assertThat(fused.report().unmatched()).as("%s unmatched modules", id).isEmpty();
    LoraAdapter peftMerged = LoraFiles.read(GoldenFiles.peft021("merged/" + id));
    try (SafetensorsFile base = SafetensorsFile.open(GoldenFiles.peft021("base.fp32.safetensors"));
        SafetensorsFile result = SafetensorsFile.open(output)) {
      assertThat(result.tensors()).as("%s layout", id).isEqualTo(base.tensors());
      for (TensorSpec info : base.tensors()) {
        String name = info.name();
        if (!fused.report().matched().containsValue(name)) {
          assertThat(result.tensor(name)).as("%s: untouched tensor %s", id, name).isEqualTo(base.tensor(name));
          continue;
        }
        double[] got = result.tensor(name).toDoubleArray();
        ModuleKey key = fused.report().matched().entrySet().stream().filter(e -> e.getValue().equals(name)).findFirst().orElseThrow().getKey();
        double[] peft = base.tensor(name).toDoubleArray();
        add(peftMerged.modules().get(key).deltaF64(), 1, peft);
        if (id.equals("svd_abc")) {
          double[] exact = base.tensor(name).toDoubleArray();
          add(exactTruncation(goldenCase, key, 8), 1, exact);
          assertThat(TinyLora.relativeError(got, exact)).as("%s: error of %s against the exact truncation", id, name).isLessThan(1e-6);
          assertThat(TinyLora.relativeError(got, peft)).as("%s: error of %s against PEFT", id, name).isLessThan(2e-5);
        } else {
          assertThat(TinyLora.relativeError(got, peft)).as("%s: error of %s against PEFT", id, name).isLessThan(1e-6);
        }
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("fusedCases")
  void fp16IsTheExactSumRoundedOnce(Map<String, Object> goldenCase) throws IOException {
    String id = (String) goldenCase.get("id");
    LoraMerger merger = PeftGoldenTest.merger(goldenCase, PeftGoldenTest.algorithm(goldenCase)).build();
    Path output = folder.resolve(id + ".fp16.safetensors");
    FusedLora fused = LoraFuser.of(merger).fuseInto(SafetensorsWeights.of(GoldenFiles.peft021("base.fp16.safetensors"), output));
    // The independent reference, summed in float64 and rounded once: for cat each input's own
    // update, for svd the exact truncation, for ties the merged adapter's (float32) factors.
    LoraAdapter merged = merger.merge();
    int mismatches = 0;
    long elements = 0;
    try (SafetensorsFile base = SafetensorsFile.open(GoldenFiles.peft021("base.fp16.safetensors"));
        SafetensorsFile result = SafetensorsFile.open(output)) {
      for (Map.Entry<ModuleKey, String> match : fused.report().matched().entrySet()) {
        double[] expected = base.tensor(match.getValue()).toDoubleArray();
        if (id.equals("cat_abc")) {
          addWeightedInputs(goldenCase, match.getKey(), expected);
        } else if (id.equals("svd_abc")) {
          add(exactTruncation(goldenCase, match.getKey(), 8), 1, expected);
        } else {
          add(merged.modules().get(match.getKey()).deltaF64(), 1, expected);
        }
        TensorData actual = result.tensor(match.getValue());
        assertThat(actual.dtype()).isEqualTo(DType.F16);
        for (int i = 0; i < expected.length; i++) {
          short want = FloatFormats.toFloat16(expected[i]);
          short got = actual.bytes().getShort(i * 2);
          if (want != got) {
            mismatches++;
          }
        }
        elements += expected.length;
      }
    }
    assertThat(elements).as("%s fused elements", id).isGreaterThan(100_000);
    assertThat(mismatches).as("%s: elements not equal to the exact sum rounded once, of %d", id, elements).isZero();
  }

  /** The best rank-{@code rank} approximation of the exact weighted sum, from a dense float64 SVD. */
  private static double[] exactTruncation(Map<String, Object> goldenCase, ModuleKey key, int rank) throws IOException {
    LoraModule any = adapter("style").modules().get(key);
    int rows = Math.toIntExact(any.outFeatures());
    int columns = Math.toIntExact(TensorData.numel(any.weightShape()) / rows);
    double[] sum = new double[rows * columns];
    addWeightedInputs(goldenCase, key, sum);
    org.ejml.data.DMatrixRMaj delta = org.ejml.data.DMatrixRMaj.wrap(rows, columns, sum);
    org.ejml.interfaces.decomposition.SingularValueDecomposition_F64<org.ejml.data.DMatrixRMaj> svd =
        org.ejml.dense.row.factory.DecompositionFactory_DDRM.svd(rows, columns, true, true, false);
    assertThat(svd.decompose(delta.copy())).isTrue();
    org.ejml.data.DMatrixRMaj u = svd.getU(null, false);
    org.ejml.data.DMatrixRMaj v = svd.getV(null, false);
    double[] sigma = svd.getSingularValues();
    Integer[] order = new Integer[sigma.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    java.util.Arrays.sort(order, (a, b) -> Double.compare(sigma[b], sigma[a]));
    double[] result = new double[rows * columns];
    for (int k = 0; k < rank; k++) {
      int index = order[k];
      for (int r = 0; r < rows; r++) {
        double left = u.get(r, index) * sigma[index];
        for (int c = 0; c < columns; c++) {
          result[r * columns + c] += left * v.get(c, index);
        }
      }
    }
    return result;
  }

  /** The golden adapter called {@code name}, read once per test class rather than once per module. */
  private static LoraAdapter adapter(String name) throws IOException {
    LoraAdapter adapter = ADAPTERS.get(name);
    if (adapter == null) {
      adapter = LoraFiles.read(GoldenFiles.peft021("adapters/" + name));
      ADAPTERS.put(name, adapter);
    }
    return adapter;
  }

  @SuppressWarnings("unchecked")
  private static void addWeightedInputs(Map<String, Object> goldenCase, ModuleKey key, double[] into) throws IOException {
    java.util.List<String> adapters = (java.util.List<String>) goldenCase.get("adapters");
    java.util.List<java.math.BigDecimal> weights = (java.util.List<java.math.BigDecimal>) goldenCase.get("weights");
    for (int i = 0; i < adapters.size(); i++) {
      LoraModule module =
          adapter(adapters.get(i)).modules().get(key);
      if (module != null) {
        add(module.deltaF64(), weights.get(i).doubleValue(), into);
      }
    }
  }

  private static void add(double[] delta, double weight, double[] into) {
    for (int i = 0; i < into.length; i++) {
      into[i] += weight * delta[i];
    }
  }
}

package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.json.Json;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.testing.GoldenFiles;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every deterministic case of PEFT 0.21's golden set: the merged update s·B·A of every module
 * must match PEFT's within 1e-5 relative over all modules (1e-4 for the SVD methods, whose
 * factors are only defined up to rotation and whose float32 SVDs differ in rounding).
 */
class PeftGoldenTest {
  @SuppressWarnings("unchecked")
  static Stream<Map<String, Object>> deterministicCases() throws IOException {
    Map<String, Object> cases = Json.parseObject(Files.readString(GoldenFiles.peft021("cases.json")));
    return ((List<Map<String, Object>>) cases.get("cases"))
        .stream().filter(c -> !((String) c.get("combination_type")).startsWith("dare"));
  }

  static MergeAlgorithm algorithm(Map<String, Object> goldenCase) {
    String type = (String) goldenCase.get("combination_type");
    double density = goldenCase.containsKey("density") ? ((BigDecimal) goldenCase.get("density")).doubleValue() : 1;
    MajoritySign sign =
        MajoritySign.fromPeftName((String) goldenCase.getOrDefault("majority_sign_method", "total")).orElseThrow();
    switch (type) {
      case "cat":
        return Cat.of();
      case "linear":
        return Linear.of();
      case "svd":
        return Svd.of();
      case "ties":
        return Ties.of(density).withMajoritySign(sign);
      case "ties_svd":
        return Ties.of(density).withMajoritySign(sign).onUpdates();
      case "magnitude_prune":
        return MagnitudePrune.of(density);
      case "magnitude_prune_svd":
        return MagnitudePrune.of(density).onUpdates();
      default:
        throw new AssertionError(type);
    }
  }

  static LoraAdapter merge(Map<String, Object> goldenCase, MergeAlgorithm algorithm) throws IOException {
    return merger(goldenCase, algorithm).merge();
  }

  /** A merger with the case's adapters, weights, algorithm and rank. */
  @SuppressWarnings("unchecked")
  static LoraMerger.Builder merger(Map<String, Object> goldenCase, MergeAlgorithm algorithm) throws IOException {
    List<String> adapters = (List<String>) goldenCase.get("adapters");
    List<BigDecimal> weights = (List<BigDecimal>) goldenCase.get("weights");
    LoraMerger.Builder merger = LoraMerger.builder().algorithm(algorithm);
    for (int i = 0; i < adapters.size(); i++) {
      merger.add(LoraFiles.read(GoldenFiles.peft021("adapters/" + adapters.get(i))), weights.get(i).doubleValue());
    }
    if (goldenCase.containsKey("svd_rank")) {
      merger.rank(((BigDecimal) goldenCase.get("svd_rank")).intValue());
    }
    return merger;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("deterministicCases")
  void matchesPeft(Map<String, Object> goldenCase) throws IOException {
    String id = (String) goldenCase.get("id");
    MergeAlgorithm algorithm = algorithm(goldenCase);
    LoraAdapter merged = merge(goldenCase, algorithm);
    LoraAdapter golden = LoraFiles.read(GoldenFiles.peft021("merged/" + id));
    assertThat(merged.modules().keySet()).as("%s modules", id).isEqualTo(golden.modules().keySet());
    double difference = 0;
    double norm = 0;
    for (ModuleKey key : golden.modules().keySet()) {
      LoraModule want = golden.modules().get(key);
      LoraModule got = merged.modules().get(key);
      assertThat(got.rank()).as("%s rank of %s", id, key).isEqualTo(want.rank());
      double[] expected = want.deltaF64();
      double[] actual = got.deltaF64();
      for (int i = 0; i < expected.length; i++) {
        difference += (actual[i] - expected[i]) * (actual[i] - expected[i]);
        norm += expected[i] * expected[i];
      }
    }
    double tolerance = algorithm.requirements().reRanked() ? 1e-4 : 1e-5;
    assertThat(Math.sqrt(difference / norm)).as("%s: relative error over all modules", id).isLessThan(tolerance);
  }
}

package dev.loramerge.algorithms;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.merge.MergeAlgorithm;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalDouble;
import org.junit.jupiter.api.Test;

class MergeMethodTest {
  @Test
  void eachMethodIsCalledByItsName() {
    for (MergeMethod method : MergeMethod.values()) {
      MergeAlgorithm algorithm = method.create(OptionalDouble.of(0.5), MajoritySign.TOTAL, 0);
      assertThat(algorithm.name()).as("the name %s's algorithm records", method).isEqualTo(method.methodName());
      assertThat(MergeMethod.named(method.methodName().toUpperCase(java.util.Locale.ROOT))).as("%s by name", method).contains(method);
    }
  }

  @Test
  void methodsThatPruneNeedADensity() {
    assertThat(MergeMethod.TIES_SVD.create(OptionalDouble.of(0.5), MajoritySign.FREQUENCY, 3))
        .isEqualTo(Ties.of(0.5).withMajoritySign(MajoritySign.FREQUENCY).onUpdates());
    assertThat(MergeMethod.CAT.create(OptionalDouble.empty(), MajoritySign.TOTAL, 0)).isEqualTo(Cat.of());
    assertThatThrownBy(() -> MergeMethod.TIES.create(OptionalDouble.empty(), MajoritySign.TOTAL, 0))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("ties needs a density (the fraction of entries kept, in (0, 1])");
    assertThatThrownBy(() -> MergeMethod.parse("frobnicate"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageStartingWith("unknown merge method 'frobnicate'; expected one of cat, linear, svd, ties,");
  }

  @Test
  void theReadmeTableListsEveryMethodInOrderWithItsPeftColumn() throws IOException {
    List<String> lines = Files.readAllLines(Path.of("..", "README.md"), StandardCharsets.UTF_8);
    int section = lines.indexOf("## Methods");
    assertThat(section).as("README's Methods section").isNotNegative();
    List<String> names = new ArrayList<>();
    List<Boolean> inPeft = new ArrayList<>();
    for (String line : lines.subList(section + 1, lines.size())) {
      if (line.startsWith("## ")) {
        break;
      }
      if (line.startsWith("| `")) {
        names.add(line.substring(3, line.indexOf('`', 3)));
        String[] cells = line.split(" \\| ");
        inPeft.add(cells[cells.length - 1].startsWith("yes"));
      }
    }
    assertThat(names).as("the first column of README's Methods table").isEqualTo(MergeMethod.names());
    List<Boolean> expected = new ArrayList<>();
    for (MergeMethod method : MergeMethod.values()) {
      expected.add(method.inPeft());
    }
    assertThat(inPeft).as("the PEFT column of README's Methods table, method by method").isEqualTo(expected);
  }
}

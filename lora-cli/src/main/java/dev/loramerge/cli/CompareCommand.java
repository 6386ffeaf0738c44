package dev.loramerge.cli;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.analysis.UpdateNorms;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraReadOptions;
import java.io.IOException;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code lora compare MERGED INPUT=WEIGHT...}: how far a merged adapter is from the exact weighted
 * sum of its inputs, per block (and per module with {@code --modules}), with a summary line.
 */
@Command(
    name = "compare",
    mixinStandardHelpOptions = true,
    description = {
      "Compare a merged adapter with the exact weighted sum of its inputs: relative Frobenius error,"
          + " cosine, the share of each input's update that survived, and the sign-conflict rate"
          + " between the inputs (the share of entries where the weighted inputs disagree in sign)."
    })
final class CompareCommand implements Callable<Integer> {
  @Spec CommandSpec spec;

  @Parameters(index = "0", paramLabel = "MERGED", description = "The merged adapter.")
  java.nio.file.Path merged;

  @Parameters(index = "1..*", arity = "1..*", paramLabel = "INPUT=WEIGHT", converter = WeightedInput.Converter.class,
      description = "The inputs and the weights they were merged with.")
  List<WeightedInput> inputs;

  @Option(names = "--modules", description = "Also print one line per module.")
  boolean perModule;

  @Mixin InputOptions inputOptions;
  @Mixin VerboseOption verbose;

  /** Sums over a group of modules. */
  private static final class Totals {
    int modules;
    double difference;
    double reference;
    double mergedSquared;
    double mergedDotReference;
    double[] inputDot;
    double[] inputSquared;
    long conflicts;
    long overlapping;

    Totals(int inputs) {
      inputDot = new double[inputs];
      inputSquared = new double[inputs];
    }

    void add(Totals other) {
      modules += other.modules;
      difference += other.difference;
      reference += other.reference;
      mergedSquared += other.mergedSquared;
      mergedDotReference += other.mergedDotReference;
      for (int i = 0; i < inputDot.length; i++) {
        inputDot[i] += other.inputDot[i];
        inputSquared[i] += other.inputSquared[i];
      }
      conflicts += other.conflicts;
      overlapping += other.overlapping;
    }
  }

  @Override
  public Integer call() throws IOException {
    LoraReadOptions options = inputOptions.readOptions();
    LoraAdapter result = LoraFiles.read(merged, options);
    List<LoraAdapter> adapters = new ArrayList<>();
    List<Double> weights = new ArrayList<>();
    for (WeightedInput input : inputs) {
      adapters.add(LoraFiles.read(input.path(), options));
      weights.add(input.weight());
    }
    Optional<Architecture> architecture = Architecture.detect(result);
    TreeSet<ModuleKey> keys = new TreeSet<>(result.modules().keySet());
    adapters.forEach(adapter -> keys.addAll(adapter.modules().keySet()));

    PrintWriter out = spec.commandLine().getOut();
    Map<String, Totals> byBlock = new TreeMap<>(CompareCommand::compareBlocks);
    Totals all = new Totals(adapters.size());
    if (perModule) {
      out.println(header("module"));
    }
    for (ModuleKey key : keys) {
      Totals module = compare(key, result, adapters, weights);
      if (perModule) {
        out.println(row(key.toString(), module));
      }
      String block =
          architecture.flatMap(arch -> arch.module(key)).flatMap(ModuleSpec::blockId).orElse("-");
      byBlock.computeIfAbsent(block, b -> new Totals(adapters.size())).add(module);
      all.add(module);
    }
    if (perModule) {
      out.println();
    }
    out.println(header("block"));
    byBlock.forEach((block, totals) -> out.println(row(block, totals)));
    out.println(summary(all));
    out.flush();
    return LoraCommand.OK;
  }

  private String header(String what) {
    StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "%-8s %7s %10s %8s", what, "modules", "rel.error", "cosine"));
    for (WeightedInput input : inputs) {
      line.append(String.format(Locale.ROOT, " %10s", abbreviate(LoraFiles.adapterName(input.path()))));
    }
    return line.append(String.format(Locale.ROOT, " %10s", "conflicts")).toString();
  }

  private String row(String label, Totals totals) {
    StringBuilder line =
        new StringBuilder(
            String.format(
                Locale.ROOT,
                "%-8s %7d %10.2e %8.4f",
                label,
                totals.modules,
                relativeError(totals),
                cosine(totals)));
    for (int i = 0; i < inputs.size(); i++) {
      line.append(String.format(Locale.ROOT, " %9.1f%%", 100 * kept(totals, i)));
    }
    return line.append(String.format(Locale.ROOT, " %9.1f%%", 100 * conflictRate(totals))).toString();
  }

  private String summary(Totals all) {
    StringBuilder line =
        new StringBuilder(
            String.format(
                Locale.ROOT,
                "summary: %d modules, relative error %.2e, cosine %.4f, kept",
                all.modules,
                relativeError(all),
                cosine(all)));
    for (int i = 0; i < inputs.size(); i++) {
      line.append(String.format(Locale.ROOT, " %s %.1f%%", LoraFiles.adapterName(inputs.get(i).path()), 100 * kept(all, i)));
    }
    return line.append(String.format(Locale.ROOT, ", sign conflicts %.1f%%", 100 * conflictRate(all))).toString();
  }

  private static Totals compare(ModuleKey key, LoraAdapter result, List<LoraAdapter> adapters, List<Double> weights) {
    Totals totals = new Totals(adapters.size());
    totals.modules = 1;
    List<LoraModule> terms = new ArrayList<>();
    List<Double> termWeights = new ArrayList<>();
    List<Integer> termInputs = new ArrayList<>();
    for (int i = 0; i < adapters.size(); i++) {
      LoraModule module = adapters.get(i).modules().get(key);
      if (module != null) {
        terms.add(module);
        termWeights.add(weights.get(i));
        termInputs.add(i);
      }
    }
    LoraModule mergedModule = result.modules().get(key);
    if (terms.isEmpty()) {
      double norm = UpdateNorms.norm(mergedModule);
      totals.difference = norm * norm;
      totals.mergedSquared = norm * norm;
      return totals;
    }
    if (mergedModule == null) {
      UpdateNorms.Distance distance = UpdateNorms.distance(terms.get(0), terms, termWeights);
      double reference = distance.reference();
      totals.reference = reference * reference;
      totals.difference = reference * reference;
    } else {
      UpdateNorms.Distance distance = UpdateNorms.distance(mergedModule, terms, termWeights);
      double mergedNorm = UpdateNorms.norm(mergedModule);
      totals.difference = distance.difference() * distance.difference();
      totals.reference = distance.reference() * distance.reference();
      totals.mergedSquared = mergedNorm * mergedNorm;
      // ⟨M, R⟩ from ‖M − R‖² = ‖M‖² + ‖R‖² − 2⟨M, R⟩.
      totals.mergedDotReference = (totals.mergedSquared + totals.reference - totals.difference) / 2;
      for (int t = 0; t < terms.size(); t++) {
        int input = termInputs.get(t);
        totals.inputDot[input] = UpdateNorms.inner(mergedModule, 1, terms.get(t), termWeights.get(t));
        double norm = UpdateNorms.norm(terms.get(t)) * termWeights.get(t);
        totals.inputSquared[input] = norm * norm;
      }
    }
    countConflicts(totals, terms, termWeights);
    return totals;
  }

  /** Entries where at least two weighted inputs are non-zero and not all of the same sign. */
  private static void countConflicts(Totals totals, List<LoraModule> terms, List<Double> weights) {
    if (terms.size() < 2) {
      return;
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray positive = null;
      NDArray negative = null;
      for (int i = 0; i < terms.size(); i++) {
        LoraModule module = terms.get(i);
        NDArray delta;
        if (module.adapterKind().factored()) {
          NDArray down = module.down().toNDArray(manager).reshape(module.rank(), -1);
          NDArray up = module.up().toNDArray(manager).reshape(module.outFeatures(), module.rank());
          delta = up.matMul(down).mul(weights.get(i) * module.scale());
        } else {
          delta = manager.create(module.deltaF64()).mul(weights.get(i));
        }
        NDArray isPositive = delta.gt(0).toType(ai.djl.ndarray.types.DataType.INT32, false);
        NDArray isNegative = delta.lt(0).toType(ai.djl.ndarray.types.DataType.INT32, false);
        positive = positive == null ? isPositive : positive.add(isPositive);
        negative = negative == null ? isNegative : negative.add(isNegative);
      }
      NDArray nonZero = positive.add(negative);
      totals.overlapping += nonZero.gte(2).sum().getLong();
      totals.conflicts += positive.gte(1).logicalAnd(negative.gte(1)).sum().getLong();
    }
  }

  private static double relativeError(Totals totals) {
    return totals.reference == 0 ? (totals.difference == 0 ? 0 : Double.POSITIVE_INFINITY) : Math.sqrt(totals.difference / totals.reference);
  }

  private static double cosine(Totals totals) {
    double denominator = Math.sqrt(totals.mergedSquared * totals.reference);
    return denominator == 0 ? 0 : totals.mergedDotReference / denominator;
  }

  /** How much of input i's weighted update the merge carries: ⟨M, wᵢΔᵢ⟩ / ‖wᵢΔᵢ‖². */
  private static double kept(Totals totals, int input) {
    return totals.inputSquared[input] == 0 ? 0 : totals.inputDot[input] / totals.inputSquared[input];
  }

  private static double conflictRate(Totals totals) {
    return totals.overlapping == 0 ? 0 : (double) totals.conflicts / totals.overlapping;
  }

  private static String abbreviate(String name) {
    return name.length() <= 10 ? name : name.substring(0, 9) + "…";
  }

  /** BASE, IN00…, M00, OUT00…, then modules without a block. */
  private static int compareBlocks(String a, String b) {
    return Integer.compare(blockOrder(a), blockOrder(b)) != 0 ? Integer.compare(blockOrder(a), blockOrder(b)) : a.compareTo(b);
  }

  private static int blockOrder(String block) {
    if (block.equals("BASE")) {
      return 0;
    }
    if (block.startsWith("IN")) {
      return 1;
    }
    if (block.startsWith("M")) {
      return 2;
    }
    if (block.startsWith("OUT")) {
      return 3;
    }
    return 4;
  }
}

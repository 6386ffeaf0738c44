package dev.loramerge.arch;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSet;
import dev.loramerge.ModuleKey;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Collectors;

/**
 * A weight per LoRA Block Weight block ({@code BASE}, {@code IN04}, {@code M00}, …) that scales
 * an adapter's modules in a merge, linearly and with its sign (kohya's and SuperMerger's default
 * merges square it; this never does).
 *
 * <p>Given as a list of numbers in the order of the architecture's ids, either all of them (SD1.5
 * 26, SDXL 20) or the LoRA subset (SD1.5 17, SDXL 12; blocks outside the subset keep weight 1),
 * or as a preset. The presets are LBW's ({@code NONE}, {@code ALL}, {@code INS}, {@code IND},
 * {@code INALL}, {@code MIDD}, {@code OUTD}, {@code OUTS}, {@code OUTALL}, {@code ALL0.5}),
 * defined by which blocks they keep so that they apply to any architecture: for SD1.5 they are
 * exactly LBW's 17-value vectors; for SDXL "shallow" and "deep" split the attention blocks the
 * same way (INS = IN04, IN05; IND = IN07, IN08; OUTD = OUT00–OUT02; OUTS = OUT03–OUT05).
 * Modules with no block (time embedding, {@code conv_out}) always have weight 1.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class BlockWeights {
  private static final BlockWeights UNIFORM = new BlockWeights(Optional.empty(), ImmutableMap.of(), "ALL");

  /** The preset names {@link #parse} accepts. */
  public static final ImmutableList<String> PRESETS =
      ImmutableList.of("NONE", "ALL", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL", "ALL0.5");

  private final Optional<Architecture> architecture;
  private final ImmutableMap<String, Double> weights;
  private final String description;

  private BlockWeights(Optional<Architecture> architecture, ImmutableMap<String, Double> weights, String description) {
    this.architecture = architecture;
    this.weights = weights;
    this.description = description;
  }

  /** Weight 1 everywhere. */
  public static BlockWeights uniform() {
    return UNIFORM;
  }

  /**
   * Weights in the order of {@code architecture}'s {@link Architecture#blockIds()} or {@link
   * Architecture#loraBlockIds()}, chosen by the count.
   *
   * @throws IllegalArgumentException when the count is neither, or a weight is not finite
   */
  public static BlockWeights of(Architecture architecture, List<Double> values) {
    checkNotNull(architecture, "architecture");
    ImmutableList<String> ids;
    if (values.size() == architecture.blockIds().size()) {
      ids = architecture.blockIds();
    } else if (values.size() == architecture.loraBlockIds().size()) {
      ids = architecture.loraBlockIds();
    } else {
      throw new IllegalArgumentException(
          String.format(
              Locale.ROOT,
              "%s block weights take %d values (%s) or %d (%s), got %d",
              architecture.displayName(),
              architecture.blockIds().size(),
              String.join(",", architecture.blockIds()),
              architecture.loraBlockIds().size(),
              String.join(",", architecture.loraBlockIds()),
              values.size()));
    }
    Map<String, Double> weights = new LinkedHashMap<>();
    for (int i = 0; i < ids.size(); i++) {
      double value = values.get(i);
      checkArgument(Double.isFinite(value), "block weight for %s must be finite, got %s", ids.get(i), value);
      weights.put(ids.get(i), value);
    }
    return new BlockWeights(
        Optional.of(architecture),
        ImmutableMap.copyOf(weights),
        values.stream().map(BlockWeights::number).collect(Collectors.joining(",")));
  }

  /**
   * A preset ({@link #PRESETS}) or a comma-separated list of numbers for {@code architecture}.
   *
   * @throws IllegalArgumentException for an unknown preset or a malformed list
   */
  public static BlockWeights parse(Architecture architecture, String text) {
    checkNotNull(architecture, "architecture");
    String trimmed = text.trim();
    String preset = trimmed.toUpperCase(Locale.ROOT);
    if (PRESETS.contains(preset)) {
      return preset(architecture, preset);
    }
    List<Double> values;
    try {
      values =
          ImmutableList.copyOf(trimmed.split(",", -1)).stream()
              .map(String::trim)
              .map(Double::parseDouble)
              .collect(Collectors.toList());
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "block weights '" + text + "' are neither a preset (" + String.join(", ", PRESETS) + ") nor numbers", e);
    }
    return of(architecture, values);
  }

  private static BlockWeights preset(Architecture architecture, String name) {
    List<String> attention = architecture.loraBlockIds();
    List<String> in = attention.stream().filter(id -> id.startsWith("IN")).collect(Collectors.toList());
    List<String> out = attention.stream().filter(id -> id.startsWith("OUT")).collect(Collectors.toList());
    // LBW's SD1.5 vectors split the input attention blocks in halves (IN01, IN02, IN04 shallow;
    // IN05, IN07, IN08 deep) and the output ones 4 deep (OUT03-06) to 5 shallow (OUT07-11); the
    // same proportions give SDXL's IN04, IN05 | IN07, IN08 and OUT00-02 | OUT03-05.
    int inShallow = (in.size() + 1) / 2;
    List<String> inShallowIds = in.subList(0, inShallow);
    List<String> inDeepIds = in.subList(inShallow, in.size());
    int outDeep = (int) Math.round(out.size() * 4 / 9.0);
    List<String> outDeepIds = out.subList(0, outDeep);
    List<String> outShallowIds = out.subList(outDeep, out.size());
    ImmutableSet<String> on;
    double value = 1;
    switch (name) {
      case "NONE":
        on = ImmutableSet.of();
        break;
      case "ALL":
        on = ImmutableSet.copyOf(architecture.blockIds());
        break;
      case "ALL0.5":
        on = ImmutableSet.copyOf(architecture.blockIds());
        value = 0.5;
        break;
      case "INS":
        on = ImmutableSet.<String>builder().add("BASE").addAll(inShallowIds).build();
        break;
      case "IND":
        on = ImmutableSet.<String>builder().add("BASE").addAll(inDeepIds).build();
        break;
      case "INALL":
        on = ImmutableSet.<String>builder().add("BASE").addAll(in).build();
        break;
      case "MIDD":
        on = ImmutableSet.<String>builder().add("BASE").addAll(inDeepIds).add("M00").addAll(outDeepIds).build();
        break;
      case "OUTD":
        on = ImmutableSet.<String>builder().add("BASE").addAll(outDeepIds).build();
        break;
      case "OUTS":
        on = ImmutableSet.<String>builder().add("BASE").addAll(outShallowIds).build();
        break;
      case "OUTALL":
        on = ImmutableSet.<String>builder().add("BASE").addAll(out).build();
        break;
      default:
        throw new AssertionError(name);
    }
    Map<String, Double> weights = new LinkedHashMap<>();
    for (String id : attention) {
      weights.put(id, on.contains(id) ? value : 0.0);
    }
    return new BlockWeights(Optional.of(architecture), ImmutableMap.copyOf(weights), name);
  }

  /** The weight of {@code key}: its block's, or 1 when the module has no block or is unlisted. */
  public double weight(ModuleKey key) {
    if (architecture.isEmpty()) {
      return 1;
    }
    return architecture
        .get()
        .module(key)
        .flatMap(ModuleSpec::blockId)
        .map(block -> weights.getOrDefault(block, 1.0))
        .orElse(1.0);
  }

  /** The architecture the weights are for (empty for {@link #uniform()}). */
  public Optional<Architecture> architecture() {
    return architecture;
  }

  /** The weight per listed block id, in order. */
  public ImmutableMap<String, Double> values() {
    return weights;
  }

  /** The preset name or the list as given, for recipes. */
  @Override
  public String toString() {
    return description;
  }

  private static String number(double value) {
    return value == Math.rint(value) && Math.abs(value) < 1e9 ? Long.toString((long) value) : Double.toString(value);
  }
}

package dev.loramerge.io;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.NormScale;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalDouble;
import java.util.Set;
import java.util.TreeSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a reader gathers from one file before it knows every module's key: the factors and alpha
 * of each module under the file's own name for it, and the tensors it could not read.
 */
final class FormatParts {
  private static final Logger log = LoggerFactory.getLogger(FormatParts.class);
  private static final int NAMES_IN_MESSAGE = 5;

  /** One module's tensors under the file's name for the module. */
  static final class Module {
    final String name;
    TensorData down;
    TensorData up;
    OptionalDouble alpha = OptionalDouble.empty();
    /** The tensors of another adapter kind, by LyCORIS part name (see {@link LycorisParts}). */
    final Map<String, TensorData> kindParts = new LinkedHashMap<>();
    TensorData doraScale;
    TensorData magnitudeVector;
    TensorData biasDiff;
    /** PEFT's {@code lora_B.bias}, before it is made a bias difference ({@link #loraBiasDifference}). */
    TensorData loraBias;

    Module(String name) {
      this.name = name;
    }

    /** The shape of the base weight the factors update. */
    long[] weightShape() {
      long[] downShape = down.shape();
      return downShape.length == 4
          ? new long[] {up.dim(0), downShape[1], downShape[2], downShape[3]}
          : new long[] {up.dim(0), downShape[1]};
    }
  }

  /**
   * How a file names a part of a fused weight: the fused module's name in the file with the rows
   * of it that hold the part, inclusive, in the part's row order ({@code
   * lora_unet_joint_blocks_0_x_block_attn_qkv rows 1536–3071}; a swapped modulation's halves read
   * {@code rows 1536–3071, 0–1535}).
   */
  static String partName(String fileModule, FusedModule fused, ModuleKey key) {
    long[] starts = fused.fusedRows();
    List<long[]> ranges = new ArrayList<>();
    for (int i = 0; i < starts.length; i++) {
      FusedModule.Segment segment = fused.segments().get(i);
      if (segment.key().equals(key)) {
        ranges.add(new long[] {segment.moduleRow(), starts[i], starts[i] + segment.rows() - 1});
      }
    }
    ranges.sort(java.util.Comparator.comparingLong(range -> range[0]));
    StringBuilder name = new StringBuilder(fileModule).append(" rows ");
    for (int i = 0; i < ranges.size(); i++) {
      name.append(i == 0 ? "" : ", ").append(ranges.get(i)[1]).append('–').append(ranges.get(i)[2]);
    }
    return name.toString();
  }

  /** kohya's suffixes of a module's factors and alpha. */
  private static final ImmutableMap<String, String> KOHYA_SUFFIXES =
      ImmutableMap.of(".lora_down.weight", "down", ".lora_up.weight", "up", ".alpha", "alpha");

  /**
   * PEFT's suffixes of a module's factors and {@code lora_bias} (a Linear's bias on B, which the
   * LoRA adds scaled like B·A), which ComfyUI reads after a module name as well as kohya's.
   */
  private static final ImmutableMap<String, String> PEFT_SUFFIXES =
      ImmutableMap.of(".lora_A.weight", "down", ".lora_B.weight", "up", ".lora_B.bias", "lora bias");

  /**
   * Whether {@link #collect} files a tensor with this suffix: kohya's factors and alpha, a
   * LyCORIS kind's tensors, and with {@code peftNames} PEFT's factors and {@code lora_B.bias}.
   */
  static boolean isModuleSuffix(String suffix, boolean peftNames) {
    return KOHYA_SUFFIXES.containsKey(suffix) || LycorisParts.isKindSuffix(suffix)
        || (peftNames && PEFT_SUFFIXES.containsKey(suffix));
  }

  /** Every suffix {@link #isModuleSuffix} knows with PEFT's names, longest first. */
  static ImmutableList<String> moduleSuffixes() {
    List<String> suffixes = new ArrayList<>(KOHYA_SUFFIXES.keySet());
    suffixes.addAll(PEFT_SUFFIXES.keySet());
    suffixes.addAll(LycorisParts.kindSuffixes());
    suffixes.sort(java.util.Comparator.comparingInt(String::length).reversed());
    return ImmutableList.copyOf(suffixes);
  }

  /**
   * Files tensor {@code tensorName} of module {@code module}, by its {@code suffix} (one that
   * {@link #isModuleSuffix} knows).
   */
  void collect(String module, String suffix, String tensorName, TensorData tensor) {
    String role = KOHYA_SUFFIXES.containsKey(suffix) ? KOHYA_SUFFIXES.get(suffix) : PEFT_SUFFIXES.get(suffix);
    if (role == null) {
      LycorisParts.collect(module(module), suffix, tensor);
      return;
    }
    switch (role) {
      case "down":
        module(module).down = tensor;
        break;
      case "up":
        module(module).up = tensor;
        break;
      case "alpha":
        module(module).alpha = OptionalDouble.of(alphaValue(fileName, tensorName, tensor));
        break;
      default:
        module(module).loraBias = tensor;
    }
  }

  private final String fileName;
  private final Map<String, Module> modules = new LinkedHashMap<>();
  private final List<String> unsupported = new ArrayList<>();

  FormatParts(String fileName) {
    this.fileName = fileName;
  }

  String fileName() {
    return fileName;
  }

  Module module(String name) {
    return modules.computeIfAbsent(name, Module::new);
  }

  void unsupported(String tensorName) {
    unsupported.add(tensorName);
  }

  /**
   * The complete modules, after checking that each has both factors and that nothing unreadable
   * is left unless the caller allowed it.
   */
  ImmutableList<Module> complete(boolean skipUnsupported) {
    for (Module module : modules.values()) {
      if (!LycorisParts.hasKind(module) && (module.down == null || module.up == null)) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "%s: module '%s' has %s but no %s factor",
                fileName,
                module.name,
                module.down == null ? "an up" : "a down",
                module.down == null ? "down" : "up"));
      }
    }
    if (!unsupported.isEmpty()) {
      String message =
          String.format(
              Locale.ROOT,
              "%s: %d tensor%s cannot be read as the tensors of a LoRA, LoCon, LoHa, LoKr, DoRA or"
                  + " full difference (unknown keys): %s",
              fileName,
              unsupported.size(),
              unsupported.size() == 1 ? "" : "s",
              quoteFirst(unsupported));
      if (!skipUnsupported) {
        throw new LoraMergeException(message + "; skipUnsupported(true) drops them");
      }
      Set<String> dropped = new TreeSet<>();
      for (String tensor : unsupported) {
        String module = moduleOf(tensor);
        if (!modules.containsKey(module)) {
          dropped.add(module);
        }
      }
      if (dropped.size() > modules.size()) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "%s: skipping what cannot be read would drop %d of the adapter's %d modules (%s) and keep %d;"
                    + " refusing to make a result from what is left",
                fileName,
                dropped.size(),
                dropped.size() + modules.size(),
                quoteFirst(List.copyOf(dropped)),
                modules.size()));
      }
      log.warn("{}; dropped", message);
    }
    return ImmutableList.copyOf(modules.values());
  }

  /**
   * The module an unreadable tensor belongs to, as far as its name tells: the name without a
   * {@code .weight} or {@code .bias} and then without its last segment ({@code
   * lora_unet_x.hada_w1_a} and {@code lora_te3_x.lora_down.weight} are both {@code lora_unet_x}
   * and {@code lora_te3_x}).
   */
  private static String moduleOf(String tensor) {
    String name = tensor;
    for (String suffix : new String[] {".weight", ".bias"}) {
      if (name.endsWith(suffix)) {
        name = name.substring(0, name.length() - suffix.length());
      }
    }
    int dot = name.lastIndexOf('.');
    return dot < 0 ? name : name.substring(0, dot);
  }

  /** The first few names, quoted, and how many more there are. */
  static String quoteFirst(List<String> names) {
    StringBuilder text = new StringBuilder();
    for (int i = 0; i < Math.min(NAMES_IN_MESSAGE, names.size()); i++) {
      text.append(i == 0 ? "'" : ", '").append(names.get(i)).append('\'');
    }
    if (names.size() > NAMES_IN_MESSAGE) {
      text.append(String.format(Locale.ROOT, " and %d more", names.size() - NAMES_IN_MESSAGE));
    }
    return text.toString();
  }

  /**
   * The bias difference PEFT's {@code lora_B.bias} makes: the bias times the module's scale
   * (PEFT's forward scales {@code lora_B(lora_A(x))}, bias included), as it is where the scale is
   * 1, else in float64.
   */
  static TensorData loraBiasDifference(TensorData loraBias, double scale) {
    if (scale == 1) {
      return loraBias;
    }
    double[] values = loraBias.toDoubleArray();
    for (int i = 0; i < values.length; i++) {
      values[i] *= scale;
    }
    return TensorData.ofDoubles(values, dev.loramerge.DType.F64, loraBias.shape());
  }

  /**
   * The {@link dev.loramerge.AdapterKind#REPLACEMENT} of norm scale {@code norm} that tensor
   * {@code tensorName} holds.
   *
   * @throws LoraMergeException when the tensor's shape is not the norm's
   */
  static LoraModule normReplacement(String fileName, String tensorName, NormScale norm, TensorData tensor) {
    if (!java.util.Arrays.equals(tensor.shape(), norm.weightShape()) || !tensor.dtype().isFloatingPoint()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "%s: tensor '%s' replaces norm scale '%s', which is %s, but is %s %s", fileName, tensorName,
              norm.key(), java.util.Arrays.toString(norm.weightShape()), tensor.dtype().safetensorsName(),
              java.util.Arrays.toString(tensor.shape())));
    }
    return LoraModule.replacement(norm.key(), tensor);
  }

  /** Reads a 0-d or 1-element alpha tensor. */
  static double alphaValue(String fileName, String tensorName, TensorData tensor) {
    if (tensor.numel() != 1) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "%s: alpha tensor '%s' is %s, expected a single number",
              fileName,
              tensorName,
              tensor));
    }
    return tensor.getDouble(0);
  }
}

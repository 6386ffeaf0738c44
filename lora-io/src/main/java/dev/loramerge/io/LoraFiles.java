package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableSortedMap;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorSpec;
import dev.loramerge.arch.Architecture;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Collectors;

/**
 * Reads and writes LoRA adapters in PEFT, kohya and diffusers form, detecting the format of what
 * it reads; also reads Flux.1 LoRAs in XLabs', ComfyUI's and BFL's layouts and SD3.5 LoRAs in
 * ComfyUI's (original MMDiT names).
 *
 * <pre>{@code
 * LoraAdapter style = LoraFiles.read(Path.of("style.safetensors"));       // kohya file
 * LoraAdapter subject = LoraFiles.read(Path.of("subject"));               // PEFT folder
 * LoraFiles.write(style, Path.of("style-peft"), LoraFormat.PEFT);
 * }</pre>
 *
 * <p>Factors of an adapter read here are read-only memory mappings of its file: the file must
 * not be changed while the adapter is in use. Writes go through a temporary file in the target
 * folder renamed into place, so a failed write leaves nothing behind; inputs are never modified.
 */
public final class LoraFiles {
  /** The file diffusers' {@code save_lora_weights} writes inside a folder. */
  static final String DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors";

  private LoraFiles() {}

  /** Reads an adapter with the default options. */
  public static LoraAdapter read(Path path) throws IOException {
    return read(path, LoraReadOptions.defaults());
  }

  /**
   * Reads the adapter at {@code path}: a PEFT folder (or its {@code adapter_model.safetensors}),
   * a kohya file, a diffusers file (or a folder holding {@code
   * pytorch_lora_weights.safetensors}), a Flux.1 file in XLabs', ComfyUI's or BFL's layout, or an
   * SD3.5 file in ComfyUI's.
   *
   * @throws SafetensorsFormatException when the bytes are not a valid safetensors file
   * @throws IOException when the file cannot be read or is no LoRA adapter this library knows
   * @throws dev.loramerge.LoraMergeException when names cannot be resolved or tensors are not
   *     LoRA factors
   */
  public static LoraAdapter read(Path path, LoraReadOptions options) throws IOException {
    return readFile(path, options).adapter();
  }

  /**
   * An adapter read from a file, with the file's layout, for each module how the file names it,
   * and the architecture it was taken for.
   *
   * @param adapter the adapter, as {@link #read(Path, LoraReadOptions)} returns it
   * @param format the layout the file was read in
   * @param moduleNames each module's name in the file, without its tensors' suffixes ({@code
   *     lora_unet_joint_blocks_0_x_block_attn_proj}, {@code transformer.transformer_blocks.0.attn.to_q});
   *     a part of a fused weight is the fused module's name with its rows ({@code
   *     lora_unet_double_blocks_0_img_attn_qkv rows 3072–6143})
   * @param architecture the architecture the adapter was taken for, and why
   */
  public record AdapterFile(
      LoraAdapter adapter, LoraFormat format, ImmutableSortedMap<ModuleKey, String> moduleNames, Detected architecture) {
    /** Validates the parts. */
    public AdapterFile {
      checkNotNull(adapter, "adapter");
      checkNotNull(format, "format");
      checkNotNull(moduleNames, "moduleNames");
      checkNotNull(architecture, "architecture");
    }
  }

  /**
   * The architecture an adapter read from a file was taken for. The authorities, in order: the
   * architecture the read options give; the file's metadata ({@link Architecture#namedBy}:
   * {@code modelspec.architecture}, kohya's {@code ss_base_model_version}, {@code ss_v2}); kohya's
   * naming dialect ({@code lora_unet_input_blocks_…}, {@code lora_te1_…} and {@code lora_te2_…}
   * are SDXL's, {@code lora_te_…} SD1.x's and SD2.x's); then the first architecture, in {@link
   * Architecture#all()} order, whose modules and shapes the adapter fits. Each hint only chooses
   * among the architectures the adapter fits: one it does not fit is passed over with a warning.
   * When a hint chose what the shapes and metadata alone would not, the read records it in the
   * adapter's metadata under {@link Architecture#METADATA_KEY}, so that {@link
   * Architecture#detect} (fusing, merging by blocks, writing kohya names) and the files written
   * from the adapter say the same.
   *
   * @param architecture the architecture; empty when the adapter fits none
   * @param reason why a hint chose it over an architecture listed earlier that fits too ({@code
   *     from kohya's names (lora_te1_…); the shapes fit SD1.5 too}); empty when the shapes chose
   * @param warnings one line for each hint passed over because the adapter does not fit it
   * @param recorded whether the read added {@link Architecture#METADATA_KEY} to the adapter's
   *     metadata (it is not in the file's)
   */
  public record Detected(
      Optional<Architecture> architecture, Optional<String> reason, ImmutableList<String> warnings, boolean recorded) {
    /** Validates the parts. */
    public Detected {
      checkNotNull(architecture, "architecture");
      checkNotNull(reason, "reason");
      checkNotNull(warnings, "warnings");
    }

    Detected recording() {
      return new Detected(architecture, reason, warnings, true);
    }
  }

  /**
   * Reads the adapter at {@code path} as {@link #read(Path, LoraReadOptions)} does, keeping what
   * {@code lora inspect} shows of the file: its layout, its name for every module and the
   * architecture it was taken for.
   */
  public static AdapterFile readFile(Path path, LoraReadOptions options) throws IOException {
    checkNotNull(path, "path");
    checkNotNull(options, "options");
    LoraFormat format = detect(path);
    String name = adapterName(path);
    Map<ModuleKey, String> names = new HashMap<>();
    LoraAdapter adapter;
    if (format == LoraFormat.PEFT) {
      adapter = PeftFormat.read(path, name, options, names);
    } else {
      try (SafetensorsFile file = SafetensorsFile.open(weightsFile(path))) {
        switch (format) {
          case KOHYA:
            adapter = KohyaFormat.read(file, name, options, names);
            break;
          case DIFFUSERS:
            adapter = DiffusersFormat.read(file, name, options, names);
            break;
          default:
            adapter = OriginalNamesFormat.read(file, name, options, format, names);
        }
      }
    }
    Detected architecture = ArchitectureChoice.choose(adapter, format, names.values(), options.architecture());
    if (architecture.architecture().isPresent() && !architecture.architecture().equals(Architecture.detect(adapter))) {
      adapter = adapter.toBuilder().putMetadata(Architecture.METADATA_KEY, architecture.architecture().get().id()).build();
      architecture = architecture.recording();
    }
    return new AdapterFile(adapter, format, ImmutableSortedMap.copyOf(names), architecture);
  }

  /**
   * The format of the adapter at {@code path}.
   *
   * @throws IOException when it is none of them
   */
  public static LoraFormat detect(Path path) throws IOException {
    if (!Files.exists(path)) {
      throw new NoSuchFileException(path.toString(), null, "no such file or folder");
    }
    if (PeftFormat.configFor(path).isPresent()
        && (Files.isDirectory(path) || path.getFileName().toString().equals(PeftFormat.WEIGHTS))) {
      return LoraFormat.PEFT;
    }
    Path weights = weightsFile(path);
    try (SafetensorsFile file = SafetensorsFile.open(weights)) {
      List<String> names = file.tensors().stream().map(TensorSpec::name).collect(Collectors.toList());
      if (KohyaFormat.matches(names)) {
        return LoraFormat.KOHYA;
      }
      if (DiffusersFormat.matches(names)) {
        return LoraFormat.DIFFUSERS;
      }
      Optional<LoraFormat> original = OriginalNamesFormat.detect(names);
      if (original.isPresent()) {
        return original.get();
      }
      throw new IOException(
          weights.getFileName()
              + ": no LoRA factors found (expected kohya 'lora_unet_<name>.lora_down.weight', diffusers"
              + " 'unet.<path>.lora_A.weight' or a PEFT folder with adapter_config.json); first tensors: "
              + FormatParts.quoteFirst(names));
    }
  }

  /**
   * Writes {@code adapter} to {@code target} in {@code format}: a folder for {@link
   * LoraFormat#PEFT}, a {@code .safetensors} file otherwise. The adapter's metadata is kept.
   *
   * @throws IllegalArgumentException for a format that is only read ({@link LoraFormat#writable()})
   */
  public static void write(LoraAdapter adapter, Path target, LoraFormat format) throws IOException {
    checkNotNull(adapter, "adapter");
    checkNotNull(target, "target");
    checkNotNull(format, "format");
    switch (format) {
      case PEFT:
        PeftFormat.write(adapter, target);
        break;
      case KOHYA:
        KohyaFormat.write(adapter, target);
        break;
      case DIFFUSERS:
        DiffusersFormat.write(adapter, target);
        break;
      default:
        throw new IllegalArgumentException(
            "the " + format.cliName() + " layout is read, not written; write peft, kohya or diffusers");
    }
  }

  private static Path weightsFile(Path path) throws IOException {
    if (!Files.isDirectory(path)) {
      return path;
    }
    Path diffusers = path.resolve(DIFFUSERS_WEIGHTS);
    if (Files.isRegularFile(diffusers)) {
      return diffusers;
    }
    throw new IOException(
        path + ": a folder with neither " + PeftFormat.CONFIG + " nor " + DIFFUSERS_WEIGHTS);
  }

  /**
   * The name an adapter read from {@code path} gets: the file or folder name without {@code
   * .safetensors}; a PEFT or diffusers weights file is named after its folder.
   */
  public static String adapterName(Path path) {
    Path named = path.toAbsolutePath().normalize();
    String file = named.getFileName().toString();
    if (!Files.isDirectory(named)
        && (file.equals(PeftFormat.WEIGHTS) || file.equals(DIFFUSERS_WEIGHTS))
        && named.getParent() != null) {
      file = named.getParent().getFileName().toString();
    }
    return file.endsWith(".safetensors") ? file.substring(0, file.length() - ".safetensors".length()) : file;
  }
}

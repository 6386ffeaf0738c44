package dev.loramerge.io;

import com.google.common.collect.ImmutableList;
import dev.loramerge.AdapterKind;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.arch.NormScale;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;

/**
 * Chooses the architecture of an adapter read from a file, by authority: the architecture the
 * caller gave, the file's metadata ({@link Architecture#namedBy}), kohya's naming dialect, then
 * the shapes alone. A hint only chooses among the architectures the modules fit; one that fits
 * none is passed over with a warning, never followed into a wrong answer.
 */
final class ArchitectureChoice {
  // kohya-ss/sd-scripts networks/lora.py: LORA_PREFIX_TEXT_ENCODER "lora_te" for SD1.x/2.x's one
  // text encoder, LORA_PREFIX_TEXT_ENCODER1/2 "lora_te1"/"lora_te2" for SDXL's two (the UNet is
  // library/sdxl_original_unet.py's, so its modules are named input_blocks / middle_block /
  // output_blocks); networks/lora_flux.py and lora_sd3.py name CLIP-L "lora_te1", CLIP-G
  // "lora_te2" and T5 "lora_te3".
  private static final ImmutableList<Architecture> AFTER_SD2 =
      ImmutableList.of(Architecture.sdxl(), Architecture.flux(), Architecture.sd35Medium(), Architecture.sd35Large());
  private static final ImmutableList<Architecture> SD1_FAMILY = ImmutableList.of(Architecture.sd15(), Architecture.sd2());
  private static final List<String> SDXL_UNET = List.of("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_");
  private static final List<String> NUMBERED_TEXT_ENCODERS = List.of("lora_te1_", "lora_te2_", "lora_te3_");
  private static final String TEXT_ENCODER = "lora_te_";

  private ArchitectureChoice() {}

  private record Hint(String source, ImmutableList<Architecture> architectures) {}

  /**
   * The architecture of {@code adapter}, read in {@code format} from a file naming its modules
   * {@code fileNames}, with why a hint chose it and why a hint was passed over.
   */
  static LoraFiles.Detected choose(
      LoraAdapter adapter, LoraFormat format, Collection<String> fileNames, Optional<Architecture> given) {
    List<Hint> hints = new ArrayList<>();
    given.ifPresent(architecture -> hints.add(new Hint("the architecture given", ImmutableList.of(architecture))));
    metadataHint(adapter.metadata()).ifPresent(hints::add);
    if (format == LoraFormat.KOHYA) {
      dialectHint(fileNames).ifPresent(hints::add);
    }
    if (hints.isEmpty()) {
      // Only the shapes: the first that fits, without generating the later architectures' tables.
      return new LoraFiles.Detected(Architecture.detect(adapter), Optional.empty(), ImmutableList.of(), false);
    }
    ImmutableList<Architecture> fitting = Architecture.fitting(adapter);
    ImmutableList.Builder<String> warnings = ImmutableList.builder();
    for (Hint hint : hints) {
      Optional<Architecture> chosen = fitting.stream().filter(hint.architectures()::contains).findFirst();
      if (chosen.isPresent()) {
        Optional<String> reason = chosen.get() == fitting.get(0)
            ? Optional.empty()
            : Optional.of(String.format(
                Locale.ROOT, "from %s; the shapes fit %s too", hint.source(), names(fitting.subList(0, fitting.indexOf(chosen.get())))));
        return new LoraFiles.Detected(chosen, reason, warnings.build(), false);
      }
      warnings.add(String.format(
          Locale.ROOT,
          "by %s the adapter is for %s, but %s; taken as %s",
          hint.source(),
          names(hint.architectures()),
          misfit(hint.architectures().get(0), adapter),
          fitting.isEmpty() ? "no known architecture, as none fits" : fitting.get(0).displayName() + ", which the shapes fit"));
    }
    return new LoraFiles.Detected(fitting.stream().findFirst(), Optional.empty(), warnings.build(), false);
  }

  private static Optional<Hint> metadataHint(Map<String, String> metadata) {
    ImmutableList<Architecture> named = Architecture.namedBy(metadata);
    if (named.isEmpty()) {
      return Optional.empty();
    }
    // The key that named them, for the message: the first whose entry alone names the same.
    String source = metadata.entrySet().stream()
        .filter(entry -> Architecture.namedBy(Map.of(entry.getKey(), entry.getValue())).equals(named))
        .map(entry -> "metadata " + entry.getKey() + " = " + entry.getValue())
        .findFirst()
        .orElse("the metadata");
    return Optional.of(new Hint(source, named));
  }

  /**
   * What kohya's names say: {@code lora_unet_input_blocks_…} is SDXL's UNet, {@code lora_te1_…}
   * a text encoder of a model with several (SDXL, SD3.5, Flux.1), {@code lora_te_…} SD1.x/2.x's
   * only one. A file mixing them says nothing.
   */
  private static Optional<Hint> dialectHint(Collection<String> fileNames) {
    Set<Architecture> permitted = new LinkedHashSet<>(Architecture.all());
    Set<String> evidence = new TreeSet<>();
    for (String name : fileNames) {
      for (String prefix : SDXL_UNET) {
        if (name.startsWith(prefix)) {
          permitted.retainAll(List.of(Architecture.sdxl()));
          evidence.add(prefix + "…");
        }
      }
      for (String prefix : NUMBERED_TEXT_ENCODERS) {
        if (name.startsWith(prefix)) {
          permitted.retainAll(AFTER_SD2);
          evidence.add(prefix + "…");
        }
      }
      if (name.startsWith(TEXT_ENCODER)) {
        permitted.retainAll(SD1_FAMILY);
        evidence.add(TEXT_ENCODER + "…");
      }
    }
    if (evidence.isEmpty() || permitted.isEmpty()) {
      return Optional.empty();
    }
    return Optional.of(new Hint("kohya's names (" + String.join(", ", evidence) + ")", ImmutableList.copyOf(permitted)));
  }

  /** The first module that {@code architecture} lacks or shapes otherwise. */
  private static String misfit(Architecture architecture, LoraAdapter adapter) {
    for (LoraModule module : adapter.modules().values()) {
      Optional<long[]> shape = module.adapterKind() == AdapterKind.REPLACEMENT
          ? architecture.normScale(module.key()).map(NormScale::weightShape)
          : architecture.module(module.key()).map(ModuleSpec::weightShape);
      if (shape.isEmpty()) {
        return String.format(Locale.ROOT, "%s has no module '%s'", architecture.displayName(), module.key());
      }
      if (!Arrays.equals(shape.get(), module.weightShape()) && !architecture.widensInput(module.key(), module.weightShape())) {
        return String.format(
            Locale.ROOT, "module '%s' updates a %s weight, %s's is %s",
            module.key(), Arrays.toString(module.weightShape()), architecture.displayName(), Arrays.toString(shape.get()));
      }
    }
    return "the modules do not fit it";
  }

  private static String names(List<Architecture> architectures) {
    return architectures.stream().map(Architecture::displayName).collect(Collectors.joining(" or "));
  }
}

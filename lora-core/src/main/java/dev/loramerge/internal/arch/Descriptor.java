package dev.loramerge.internal.arch;

import static java.nio.charset.StandardCharsets.UTF_8;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSortedMap;
import com.google.common.collect.ImmutableSortedSet;
import dev.loramerge.Component;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.ModuleSpec;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.Predicate;

/**
 * The module table of one architecture, generated from the published configs bundled under
 * {@code dev/loramerge/arch/<id>/<component>/config.json}: which components it has, every
 * Linear and Conv2d layer in them, their LBW blocks, and kohya's names for them. This is the
 * implementation behind {@link dev.loramerge.arch.Architecture}; use that instead.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Descriptor {
  private static final String RESOURCES = "/dev/loramerge/arch/";

  /** Which of kohya's training scripts names an architecture's modules, and how. */
  public enum KohyaDialect {
    /**
     * {@code train_network.py} for SD 1.x / 2.x: it trains diffusers' UNet, so UNet modules are
     * underscored diffusers paths, and the one text encoder is {@code lora_te_}.
     */
    SD1(false, ImmutableMap.of(Component.UNET, "lora_unet_", Component.TEXT_ENCODER, "lora_te_")),
    /**
     * {@code sdxl_train_network.py}: it trains the original (sgm) UNet, so UNet modules are
     * underscored original paths, and the text encoders are {@code lora_te1_} (CLIP ViT-L) and
     * {@code lora_te2_} (OpenCLIP bigG, in transformers naming).
     */
    SDXL(
        true,
        ImmutableMap.of(
            Component.UNET, "lora_unet_",
            Component.TEXT_ENCODER, "lora_te1_",
            Component.TEXT_ENCODER_2, "lora_te2_"));

    private final boolean writesOriginalPaths;
    private final ImmutableMap<Component, String> prefixes;

    KohyaDialect(boolean writesOriginalPaths, ImmutableMap<Component, String> prefixes) {
      this.writesOriginalPaths = writesOriginalPaths;
      this.prefixes = prefixes;
    }

    boolean writesOriginalPaths() {
      return writesOriginalPaths;
    }

    Optional<String> prefix(Component component) {
      return Optional.ofNullable(prefixes.get(component));
    }
  }

  private final ImmutableSortedMap<ModuleKey, ModuleSpec> modules;
  private final ImmutableList<String> blockIds;
  private final ImmutableList<String> loraBlockIds;
  private final KohyaIndex kohya;

  private Descriptor(ImmutableSortedMap<ModuleKey, ModuleSpec> modules, KohyaDialect dialect) {
    this.modules = modules;
    this.blockIds = blockIds(modules.values(), spec -> true);
    this.loraBlockIds = blockIds(modules.values(), spec -> isInAttentionLora(spec.key()));
    this.kohya = KohyaIndex.build(modules.values(), dialect);
  }

  /**
   * Generates the descriptor of the bundled architecture {@code id} ({@code "sd15"}, {@code
   * "sdxl"}): one walk per component whose config is bundled.
   *
   * @throws IllegalArgumentException when no UNet config is bundled for {@code id}, or a bundled
   *     config is not one the walks model
   * @throws UncheckedIOException when a bundled config cannot be read or is not JSON
   */
  public static Descriptor generate(String id, KohyaDialect dialect) {
    List<ModuleSpec> specs = new ArrayList<>();
    for (Component component : Component.values()) {
      String resource = RESOURCES + id + "/" + component.prefix() + "/config.json";
      Optional<ModelConfig> config = read(resource);
      if (config.isPresent()) {
        specs.addAll(walk(component, config.get()));
      } else if (component == Component.UNET) {
        throw new IllegalArgumentException("no UNet config bundled for architecture '" + id + "' at " + resource);
      }
    }
    ImmutableSortedMap.Builder<ModuleKey, ModuleSpec> modules = ImmutableSortedMap.naturalOrder();
    specs.forEach(spec -> modules.put(spec.key(), spec));
    return new Descriptor(modules.buildOrThrow(), dialect);
  }

  private static Optional<ModelConfig> read(String resource) {
    try (InputStream in = Descriptor.class.getResourceAsStream(resource)) {
      if (in == null) {
        return Optional.empty();
      }
      return Optional.of(ModelConfig.parse(resource.substring(1), new String(in.readAllBytes(), UTF_8)));
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read bundled config " + resource, e);
    }
  }

  private static ImmutableList<ModuleSpec> walk(Component component, ModelConfig config) {
    if (component == Component.UNET) {
      return UNetWalker.walk(config);
    }
    if (ClipTextWalker.reads(config.modelClass())) {
      return ClipTextWalker.walk(component, config);
    }
    throw new IllegalArgumentException(
        config.source() + ": text encoder class '" + config.modelClass() + "' is not modelled");
  }

  /**
   * Whether kohya's plain LoRA (no conv_dim) targets the module: it adapts the UNet's {@code
   * Transformer2DModel}s (diffusers' {@code attentions.N}) and the text encoders' {@code
   * CLIPAttention} / {@code CLIPMLP}. LBW's LoRA presets are the blocks holding such modules.
   */
  private static boolean isInAttentionLora(ModuleKey key) {
    return key.component() == Component.UNET
        ? key.path().contains("attentions.")
        : key.path().startsWith("text_model.encoder.layers.");
  }

  private static ImmutableList<String> blockIds(
      Iterable<ModuleSpec> specs, Predicate<ModuleSpec> filter) {
    ImmutableSortedSet.Builder<String> ids = ImmutableSortedSet.orderedBy(BlockIds.ORDER);
    for (ModuleSpec spec : specs) {
      if (filter.test(spec)) {
        spec.blockId().ifPresent(ids::add);
      }
    }
    return ids.build().asList();
  }

  /** Every module, by key. */
  public ImmutableSortedMap<ModuleKey, ModuleSpec> modules() {
    return modules;
  }

  /** The LBW ids of every block that holds a module, in LBW order. */
  public ImmutableList<String> blockIds() {
    return blockIds;
  }

  /** The LBW ids of the blocks that hold a module of kohya's plain (attention) LoRA. */
  public ImmutableList<String> loraBlockIds() {
    return loraBlockIds;
  }

  /** The name kohya's scripts write for {@code key}, if it is a module of this descriptor. */
  public Optional<String> kohyaName(ModuleKey key) {
    return kohya.written(key);
  }

  /** The module a kohya name (without suffix) names, in either UNet spelling. */
  public Optional<ModuleKey> resolveKohyaName(String name) {
    return kohya.resolve(name);
  }
}

package dev.loramerge.internal.arch;

import static java.nio.charset.StandardCharsets.UTF_8;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSortedMap;
import dev.loramerge.Component;
import dev.loramerge.ModuleKey;
import dev.loramerge.arch.FusedModule;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.arch.NormScale;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
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
    SD1(false, ImmutableMap.of(Component.UNET, "lora_unet_", Component.TEXT_ENCODER, "lora_te_"), ImmutableMap.of()),
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
            Component.TEXT_ENCODER_2, "lora_te2_"),
        ImmutableMap.of()),
    /**
     * {@code flux_train_network.py} ({@code networks/lora_flux.py}): it trains BFL's original
     * model, so transformer modules are {@code lora_unet_} plus underscored original paths
     * ({@code lora_unet_double_blocks_0_img_attn_qkv}), CLIP-L is {@code lora_te1_} and T5 {@code
     * lora_te3_} ({@code --train_t5xxl}). OneTrainer writes T5 as {@code lora_te2_}, which is read
     * too (ComfyUI's {@code comfy/lora.py} maps both for Flux).
     */
    FLUX(
        true,
        ImmutableMap.of(
            Component.TRANSFORMER, "lora_unet_",
            Component.TEXT_ENCODER, "lora_te1_",
            Component.TEXT_ENCODER_2, "lora_te3_"),
        ImmutableMap.of(Component.TEXT_ENCODER_2, "lora_te2_")),
    /**
     * {@code sd3_train_network.py} ({@code networks/lora_sd3.py}): {@code lora_unet_} plus
     * underscored original MMDiT paths ({@code lora_unet_joint_blocks_0_x_block_attn_qkv}), CLIP-L
     * {@code lora_te1_}, CLIP-G {@code lora_te2_}, T5 {@code lora_te3_}.
     */
    SD3(
        true,
        ImmutableMap.of(
            Component.TRANSFORMER, "lora_unet_",
            Component.TEXT_ENCODER, "lora_te1_",
            Component.TEXT_ENCODER_2, "lora_te2_",
            Component.TEXT_ENCODER_3, "lora_te3_"),
        ImmutableMap.of());

    private final boolean writesOriginalPaths;
    private final ImmutableMap<Component, String> prefixes;
    private final ImmutableMap<Component, String> alsoRead;

    KohyaDialect(
        boolean writesOriginalPaths, ImmutableMap<Component, String> prefixes, ImmutableMap<Component, String> alsoRead) {
      this.writesOriginalPaths = writesOriginalPaths;
      this.prefixes = prefixes;
      this.alsoRead = alsoRead;
    }

    boolean writesOriginalPaths() {
      return writesOriginalPaths;
    }

    /** A second prefix other tools write for {@code component}, read but never written. */
    Optional<String> alsoRead(Component component) {
      return Optional.ofNullable(alsoRead.get(component));
    }

    Optional<String> prefix(Component component) {
      return Optional.ofNullable(prefixes.get(component));
    }
  }

  /**
   * The first segments of the original paths that hold fused weights: Flux's {@code
   * double_blocks}, {@code single_blocks} and {@code final_layer}, SD3's {@code joint_blocks} and
   * {@code final_layer}.
   */
  private static final ImmutableList<String> FUSED_ROOTS =
      ImmutableList.of("double_blocks_", "single_blocks_", "final_layer_", "joint_blocks_");

  private final ImmutableSortedMap<ModuleKey, ModuleSpec> modules;
  private final ImmutableList<String> blockIds;
  private final ImmutableList<String> loraBlockIds;
  private final KohyaIndex kohya;
  private final ImmutableMap<String, FusedModule> fused;
  private final ImmutableMap<ModuleKey, FusedModule> fusedByKey;
  private final ImmutableMap<String, FusedModule> fusedByKohyaName;
  private final String kohyaPrefix;
  private final ImmutableSortedMap<ModuleKey, NormScale> norms;

  private Descriptor(
      ImmutableSortedMap<ModuleKey, ModuleSpec> modules, ImmutableList<FusedModule> fused, ImmutableList<NormScale> norms,
      KohyaDialect dialect) {
    this.modules = modules;
    this.norms = norms.stream().collect(ImmutableSortedMap.toImmutableSortedMap(
        java.util.Comparator.naturalOrder(), NormScale::key, norm -> norm));
    this.fused = fused.stream().collect(ImmutableMap.toImmutableMap(FusedModule::originalPath, module -> module));
    ImmutableMap.Builder<ModuleKey, FusedModule> byKey = ImmutableMap.builder();
    fused.forEach(module -> module.keys().forEach(key -> byKey.put(key, module)));
    this.fusedByKey = byKey.buildOrThrow();
    this.kohyaPrefix = dialect.prefix(Component.TRANSFORMER).orElse("");
    this.fusedByKohyaName =
        fused.stream()
            .collect(ImmutableMap.toImmutableMap(module -> kohyaPrefix + module.originalPath().replace('.', '_'), module -> module));
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
    ImmutableList.Builder<FusedModule> fused = ImmutableList.builder();
    ImmutableList.Builder<NormScale> norms = ImmutableList.builder();
    boolean denoiser = false;
    for (Component component : Component.values()) {
      String resource = RESOURCES + id + "/" + component.prefix() + "/config.json";
      Optional<ModelConfig> config = read(resource);
      if (config.isPresent() && component == Component.TRANSFORMER) {
        FluxWalker.Walk walk =
            config.get().modelClass().equals(Sd3Walker.MODEL_CLASS)
                ? Sd3Walker.walk(config.get())
                : FluxWalker.walk(config.get());
        specs.addAll(walk.specs());
        fused.addAll(walk.fused());
        norms.addAll(walk.norms());
      } else if (config.isPresent()) {
        specs.addAll(walk(component, config.get()));
      }
      denoiser |= config.isPresent() && (component == Component.UNET || component == Component.TRANSFORMER);
    }
    if (!denoiser) {
      throw new IllegalArgumentException(
          "no UNet or transformer config bundled for architecture '" + id + "' under " + RESOURCES + id);
    }
    ImmutableSortedMap.Builder<ModuleKey, ModuleSpec> modules = ImmutableSortedMap.naturalOrder();
    specs.forEach(spec -> modules.put(spec.key(), spec));
    return new Descriptor(modules.buildOrThrow(), fused.build(), norms.build(), dialect);
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
    if (config.modelClass().equals(T5Walker.MODEL_CLASS)) {
      return T5Walker.walk(component, config);
    }
    throw new IllegalArgumentException(
        config.source() + ": text encoder class '" + config.modelClass() + "' is not modelled");
  }

  /**
   * Whether kohya's plain LoRA (no conv_dim) targets the module: it adapts the UNet's {@code
   * Transformer2DModel}s (diffusers' {@code attentions.N}) and the text encoders' {@code
   * CLIPAttention} / {@code CLIPMLP} ({@code T5Attention} / {@code T5DenseGatedActDense} for T5). LBW's LoRA presets are the blocks holding such modules.
   */
  private static boolean isInAttentionLora(ModuleKey key) {
    switch (key.component()) {
      case UNET:
        return key.path().contains("attentions.");
      case TRANSFORMER:
        return key.path().contains("transformer_blocks.");
      default:
        return key.path().startsWith("text_model.encoder.layers.") || key.path().startsWith("encoder.block.");
    }
  }

  private static ImmutableList<String> blockIds(
      Iterable<ModuleSpec> specs, Predicate<ModuleSpec> filter) {
    // Thousands of modules share a few dozen ids: sorting them all cost a command 0.3 s of JIT.
    Set<String> ids = new HashSet<>();
    for (ModuleSpec spec : specs) {
      if (filter.test(spec)) {
        spec.blockId().ifPresent(ids::add);
      }
    }
    return ImmutableList.sortedCopyOf(BlockIds.ORDER, ids);
  }

  /** Every module, by key. */
  public ImmutableSortedMap<ModuleKey, ModuleSpec> modules() {
    return modules;
  }

  /** The norms' scales an adapter may replace, by key. */
  public ImmutableSortedMap<ModuleKey, NormScale> norms() {
    return norms;
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

  /** The fused weights of the original checkpoint, by original path. */
  public ImmutableMap<String, FusedModule> fused() {
    return fused;
  }

  /** The fused weight {@code key} is a part of, if it is one. */
  public Optional<FusedModule> fusedOf(ModuleKey key) {
    return Optional.ofNullable(fusedByKey.get(key));
  }

  /**
   * Whether {@code name} can be a fused weight's kohya name in {@code dialect}, known without
   * generating a descriptor: false for every name that {@link #resolveFusedKohyaName} resolves to
   * nothing in each descriptor of that dialect (a test checks every bundled architecture).
   */
  public static boolean mayNameFused(KohyaDialect dialect, String name) {
    Optional<String> prefix = dialect.prefix(Component.TRANSFORMER);
    if (prefix.isEmpty() || !name.startsWith(prefix.get())) {
      return false;
    }
    int start = prefix.get().length();
    return FUSED_ROOTS.stream().anyMatch(root -> name.startsWith(root, start));
  }

  /** The fused weight a kohya name (without suffix) names. */
  public Optional<FusedModule> resolveFusedKohyaName(String name) {
    return Optional.ofNullable(fusedByKohyaName.get(name));
  }

  /** The name kohya's scripts write for {@code module}. */
  public String kohyaName(FusedModule module) {
    return kohyaPrefix + module.originalPath().replace('.', '_');
  }

  /** The module a kohya name (without suffix) names, in either UNet spelling. */
  public Optional<ModuleKey> resolveKohyaName(String name) {
    return kohya.resolve(name);
  }
}

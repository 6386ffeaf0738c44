package dev.loramerge.arch;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.base.Supplier;
import com.google.common.base.Suppliers;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.collect.ImmutableSortedMap;
import dev.loramerge.AdapterKind;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.arch.Descriptor;
import dev.loramerge.internal.arch.Descriptor.KohyaDialect;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * A diffusion model a LoRA can be made for (SD1.5, SD2.x, SDXL, SD3.5 or Flux.1): every module of its UNet or
 * transformer and text encoders that a LoRA can target, with shapes, block-weight ids, original
 * checkpoint names and kohya's names.
 *
 * <h2>Where the modules come from</h2>
 *
 * <p>Nothing here is typed by hand. The models' published diffusers / transformers configs are
 * bundled as resources ({@code runwayml/stable-diffusion-v1-5} and {@code
 * stabilityai/stable-diffusion-xl-base-1.0}: {@code unet/config.json}, {@code
 * text_encoder/config.json}, and for SDXL {@code text_encoder_2/config.json}), and a walk that
 * follows how diffusers' {@code UNet2DConditionModel} and transformers' CLIP text models build
 * their layers lists every Linear and Conv2d weight: attention {@code to_q/to_k/to_v/to_out.0},
 * {@code ff.net.0.proj}, {@code ff.net.2}, {@code proj_in/proj_out} (1×1 convolutions in SD1.5,
 * linear in SDXL), resnet {@code conv1/conv2/time_emb_proj/conv_shortcut}, down- and upsampler
 * convolutions, {@code conv_in}, {@code conv_out}, the time (and SDXL's added-condition)
 * embedding, and the text encoders' {@code q/k/v/out_proj}, {@code mlp.fc1/fc2} and SDXL's
 * {@code text_projection}.
 *
 * <p>Flux.1, SD2.x and SD3.5 are generated the same way from {@code
 * black-forest-labs/FLUX.1-dev}, {@code stabilityai/stable-diffusion-2-1} and {@code
 * stabilityai/stable-diffusion-3.5-medium} / {@code -large} configs: the walks follow diffusers'
 * {@code FluxTransformer2DModel} and {@code SD3Transformer2DModel}, name each module as the
 * original checkpoint does, and list the original weights that stack several modules as {@link
 * #fusedModules()}. Their T5 v1.1 XXL text encoder ({@code T5EncoderModel}: per block {@code
 * encoder.block.N.layer.0.SelfAttention.q/k/v/o} and {@code layer.1.DenseReluDense.wi_0/wi_1/wo})
 * is Flux's {@link dev.loramerge.Component#TEXT_ENCODER_2} and SD3's {@link
 * dev.loramerge.Component#TEXT_ENCODER_3}, as the diffusers pipelines name them.
 *
 * <h2>Block ids</h2>
 *
 * <p>{@link ModuleSpec#blockId()} uses the ids of the LBW extension (also SuperMerger's and
 * kohya's {@code --lbws}). Text-encoder modules are {@code BASE}. A UNet module's id is the
 * top-level block of the original checkpoint that holds it: {@code input_blocks.i} is {@code
 * INii}, {@code middle_block} is {@code M00}, {@code output_blocks.i} is {@code OUTii}. In
 * diffusers names that is, for both SD1.5 and SDXL: {@code conv_in} → IN00; {@code
 * down_blocks.b.(resnets|attentions).j} → IN(3b+j+1); {@code down_blocks.b.downsamplers} →
 * IN(3b+3); {@code mid_block} → M00; {@code up_blocks.b.(resnets|attentions).j} → OUT(3b+j);
 * {@code up_blocks.b.upsamplers} → OUT(3b+2). {@code time_embedding}, {@code add_embedding} and
 * {@code conv_out} ({@code time_embed}, {@code label_emb}, {@code out}) have no id, because LBW
 * matches none of its blocks to them and applies them at weight 1; kohya's {@code --lbws} and
 * sd-mecha place them differently, so a caller that wants their convention maps these three.
 * SD2.x uses SD1.5's ids. Flux.1's are {@code BASE}, {@code double_blocks.N} and {@code
 * single_blocks.N}, SD3.5's {@code joint_blocks.N} (text encoders {@code BASE}); their embedders and
 * final layers have none.
 *
 * <h2>kohya names</h2>
 *
 * <p>{@link #kohyaName} is what kohya's own scripts write: for SD1.5 {@code lora_unet_} plus the
 * diffusers path and {@code lora_te_} plus the text-encoder path; for SDXL {@code lora_unet_}
 * plus the original (sgm) path and {@code lora_te1_} / {@code lora_te2_}, always with {@code .}
 * replaced by {@code _}; for Flux.1 and SD3.5 {@code lora_unet_} plus the original (BFL, MMDiT)
 * path, fused weights included ({@link #resolveFusedKohyaName}), and {@code lora_te1_} (CLIP-L),
 * {@code lora_te2_} (SD3's CLIP-G) and {@code lora_te3_} (T5) plus the text-encoder path; Flux's
 * T5 is also read as {@code lora_te2_}, OneTrainer's spelling. {@link #resolveKohyaName} also
 * accepts a UNet module under the other spelling (diffusers or original), since converters write
 * both. Because underscores cannot be
 * turned back into dots by rule, resolution is an exact lookup in tables built from the
 * descriptor, never a guess.
 *
 * <h2>Guarantees</h2>
 *
 * <p>There is one instance per architecture, generated on first use; instances are immutable and
 * thread-safe, and compare by identity.
 *
 * <pre>{@code
 * Architecture sdxl = Architecture.sdxl();
 * ModuleKey key = sdxl.resolveKohyaName("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k").get();
 * // unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k
 * ModuleSpec spec = sdxl.module(key).get();
 * // weightShape() [640, 2048], blockId() IN04
 * }</pre>
 */
public final class Architecture {
  private static final Supplier<Architecture> SD15 =
      Suppliers.memoize(() -> new Architecture("sd15", "SD1.5", KohyaDialect.SD1));
  private static final Supplier<Architecture> SDXL =
      Suppliers.memoize(() -> new Architecture("sdxl", "SDXL", KohyaDialect.SDXL));
  private static final Supplier<Architecture> SD2 =
      Suppliers.memoize(() -> new Architecture("sd2", "SD2.x", KohyaDialect.SD1));
  private static final Supplier<Architecture> SD35_MEDIUM =
      Suppliers.memoize(() -> new Architecture("sd35-medium", "SD3.5 Medium", KohyaDialect.SD3));
  private static final Supplier<Architecture> SD35_LARGE =
      Suppliers.memoize(() -> new Architecture("sd35-large", "SD3.5 Large", KohyaDialect.SD3));
  private static final Supplier<Architecture> FLUX =
      Suppliers.memoize(() -> new Architecture("flux", "Flux.1", KohyaDialect.FLUX));

  private final String id;
  private final String displayName;
  private final KohyaDialect dialect;
  // Generated on first use: reading a file tries every architecture for fused names, and
  // generating all six tables took a merge command 60 ms and their JIT.
  private final Supplier<Descriptor> descriptor;

  private Architecture(String id, String displayName, KohyaDialect dialect) {
    this.id = id;
    this.displayName = displayName;
    this.dialect = dialect;
    this.descriptor = Suppliers.memoize(() -> Descriptor.generate(id, dialect));
  }

  /** Stable Diffusion 1.5: one CLIP ViT-L/14 text encoder, a four-level UNet. */
  public static Architecture sd15() {
    return SD15.get();
  }

  /** Stable Diffusion XL 1.0 base: CLIP ViT-L/14 and OpenCLIP bigG text encoders, a three-level UNet. */
  public static Architecture sdxl() {
    return SDXL.get();
  }

  /**
   * Flux.1 [dev] (and [schnell], which lacks the guidance embedder): the {@code
   * FluxTransformer2DModel} of 19 double and 38 single blocks, 3072 wide, CLIP ViT-L/14 and T5 v1.1
   * XXL ({@code text_encoder_2}).
   * Transformer modules are keyed by their diffusers paths ({@code
   * transformer.transformer_blocks.0.attn.to_q}); the original checkpoint's fused weights
   * ({@code double_blocks.0.img_attn.qkv}, {@code single_blocks.0.linear1}) are {@link
   * #fusedModules()}.
   */
  public static Architecture flux() {
    return FLUX.get();
  }

  /**
   * Stable Diffusion 2.x (2.0 and 2.1, 512 and 768): SD1.5's UNet layout with linear projections,
   * 1024-wide cross-attention and per-level head counts, and OpenCLIP ViT-H's text tower in
   * transformers naming (23 layers). kohya names it as SD1.5 ({@code lora_unet_} diffusers paths,
   * {@code lora_te_}).
   */
  public static Architecture sd2() {
    return SD2.get();
  }

  /**
   * Stable Diffusion 3.5 Medium: the MMDiT {@code SD3Transformer2DModel} of 24 joint blocks, 1536
   * wide, with a second image attention ({@code attn2}) in blocks 0–12; CLIP ViT-L/14 and OpenCLIP
   * bigG, both with projection, and T5 v1.1 XXL ({@code text_encoder_3}). Modules are keyed by
   * diffusers paths; the original checkpoint's fused {@code joint_blocks.N.x_block.attn.qkv},
   * {@code attn2.qkv} and {@code context_block.attn.qkv} are {@link #fusedModules()}.
   */
  public static Architecture sd35Medium() {
    return SD35_MEDIUM.get();
  }

  /** Stable Diffusion 3.5 Large: 38 joint blocks, 2432 wide; otherwise as {@link #sd35Medium()}. */
  public static Architecture sd35Large() {
    return SD35_LARGE.get();
  }

  /** Every known architecture: SD1.5, SDXL, Flux.1, SD2.x, SD3.5 Medium, then SD3.5 Large. */
  public static ImmutableList<Architecture> all() {
    return ImmutableList.of(sd15(), sdxl(), flux(), sd2(), sd35Medium(), sd35Large());
  }

  /** The architecture whose {@link #id()} is exactly {@code id}. */
  public static Optional<Architecture> byId(String id) {
    checkNotNull(id, "id");
    return all().stream().filter(architecture -> architecture.id.equals(id)).findFirst();
  }

  /**
   * The metadata key under which this library records the {@link #id()} of the architecture an
   * adapter is for, when neither its file's metadata nor its shapes alone say it: {@code
   * LoraFiles} (lora-io) writes it on reading for an architecture given explicitly or named
   * by kohya's names (a small SDXL LoRA whose modules SD1.5 has with the same shapes), and the
   * writers keep it, so a converted file still says it. {@link #detect} reads it before any other
   * key.
   */
  public static final String METADATA_KEY = "loramerge_architecture";

  /**
   * The architecture {@code adapter} is for: of the architectures it {@linkplain #fitting fits},
   * the first that its metadata {@linkplain #namedBy names}, else the first in {@link #all()}
   * order. A name that no fitting architecture answers (an SDXL file whose modules fit only
   * SD1.5) is passed over for the shapes; {@code lora inspect} says so. Empty for an empty
   * adapter or when none fits.
   */
  public static Optional<Architecture> detect(LoraAdapter adapter) {
    checkNotNull(adapter, "adapter");
    if (adapter.size() == 0) {
      return Optional.empty();
    }
    // Lazily, so that an adapter SD1.5 fits does not generate the other architectures' tables.
    ImmutableList<Architecture> named = namedBy(adapter.metadata());
    return all().stream().filter(named::contains).filter(architecture -> architecture.fits(adapter)).findFirst()
        .or(() -> all().stream().filter(architecture -> architecture.fits(adapter)).findFirst());
  }

  /**
   * Every architecture, in {@link #all()} order, that has every module of {@code adapter} with
   * the base-weight shape its factors imply, or one it {@linkplain #widensInput widens} to it (a
   * {@linkplain AdapterKind#REPLACEMENT replacement}: one of its {@link #normScales()} of the
   * replacement's shape); empty for an empty adapter. A small LoRA may fit several: SD1.5 and
   * SDXL share the shapes of {@code down_blocks.1}'s self-attention and of CLIP ViT-L, SD1.5 and
   * SD2.x those of every self-attention and feed-forward layer.
   */
  public static ImmutableList<Architecture> fitting(LoraAdapter adapter) {
    checkNotNull(adapter, "adapter");
    if (adapter.size() == 0) {
      return ImmutableList.of();
    }
    return all().stream().filter(architecture -> architecture.fits(adapter)).collect(ImmutableList.toImmutableList());
  }

  /**
   * The architectures a file's metadata says it is for, from the first of these keys that names
   * any: {@link #METADATA_KEY} (an {@link #id()}); the SAI model spec's {@code
   * modelspec.architecture} ({@code stable-diffusion-v1}, {@code stable-diffusion-v2-512}, {@code
   * stable-diffusion-v2-768-v}, {@code stable-diffusion-xl-v1-base}, {@code
   * stable-diffusion-3-…} (Medium or Large, both when it does not say which), {@code flux-1-dev},
   * {@code flux-1-schnell}, {@code flux-1}, each maybe followed by {@code /lora}); kohya
   * sd-scripts' {@code ss_base_model_version} ({@code sd_v1}, {@code sd_v2} with an optional
   * {@code _v}, {@code sdxl_base_v1-0}, {@code sd3…}, {@code flux1…}); and {@code ss_v2} = {@code
   * True}. Empty when none names an architecture this library knows.
   */
  public static ImmutableList<Architecture> namedBy(Map<String, String> metadata) {
    checkNotNull(metadata, "metadata");
    for (String key : List.of(METADATA_KEY, "modelspec.architecture", "ss_base_model_version", "ss_v2")) {
      String value = metadata.get(key);
      if (value != null) {
        ImmutableList<Architecture> named = named(key, value.trim().toLowerCase(Locale.ROOT));
        if (!named.isEmpty()) {
          return named;
        }
      }
    }
    return ImmutableList.of();
  }

  // The values are those kohya-ss/sd-scripts writes: library/sai_model_spec.py (ARCH_SD_V1 …
  // ARCH_FLUX_1_UNKNOWN, "/lora" appended; SD3 as "stable-diffusion-3-" + the model type),
  // library/model_util.py get_model_version_str_for_sd1_sd2 ("sd_v1", "sd_v2", "_v" appended for
  // v-parameterization), library/sdxl_model_util.py MODEL_VERSION_SDXL_BASE_V1_0
  // ("sdxl_base_v1-0"), library/flux_utils.py MODEL_VERSION_FLUX_V1 ("flux1"); sd3_train_network.py
  // writes the loaded MMDiT's model_type, read here as SD3.5 when it starts with "sd3".
  private static ImmutableList<Architecture> named(String key, String value) {
    switch (key) {
      case METADATA_KEY:
        return byId(value).map(ImmutableList::of).orElse(ImmutableList.of());
      case "modelspec.architecture":
        String architecture = value.contains("/") ? value.substring(0, value.indexOf('/')) : value;
        if (architecture.startsWith("stable-diffusion-xl-")) {
          return ImmutableList.of(sdxl());
        }
        if (architecture.startsWith("stable-diffusion-v2")) {
          return ImmutableList.of(sd2());
        }
        if (architecture.startsWith("stable-diffusion-v1")) {
          return ImmutableList.of(sd15());
        }
        if (architecture.startsWith("stable-diffusion-3")) {
          return sd3(architecture);
        }
        return architecture.startsWith("flux-1") ? ImmutableList.of(flux()) : ImmutableList.of();
      case "ss_base_model_version":
        if (value.startsWith("sdxl")) {
          return ImmutableList.of(sdxl());
        }
        if (value.startsWith("sd_v2")) {
          return ImmutableList.of(sd2());
        }
        if (value.startsWith("sd_v1")) {
          return ImmutableList.of(sd15());
        }
        if (value.startsWith("sd3")) {
          return sd3(value);
        }
        return value.startsWith("flux1") ? ImmutableList.of(flux()) : ImmutableList.of();
      default:
        return value.equals("true") ? ImmutableList.of(sd2()) : ImmutableList.of();
    }
  }

  /** SD3.5 Large or Medium when the name says which ("-large", "5l", "-medium", "-m", "5m"), else both. */
  private static ImmutableList<Architecture> sd3(String name) {
    if (name.contains("large") || name.endsWith("5l")) {
      return ImmutableList.of(sd35Large());
    }
    if (name.contains("medium") || name.endsWith("-m") || name.endsWith("5m")) {
      return ImmutableList.of(sd35Medium());
    }
    return ImmutableList.of(sd35Medium(), sd35Large());
  }

  private boolean fits(LoraAdapter adapter) {
    for (LoraModule module : adapter.modules().values()) {
      Optional<long[]> shape = module.adapterKind() == AdapterKind.REPLACEMENT
          ? normScale(module.key()).map(NormScale::weightShape)
          : module(module.key()).map(ModuleSpec::weightShape);
      if (shape.isEmpty()
          || !(Arrays.equals(shape.get(), module.weightShape()) || widensInput(module.key(), module.weightShape()))) {
        return false;
      }
    }
    return true;
  }

  /** The short id used in files and on the command line: {@code "sd15"} or {@code "sdxl"}. */
  public String id() {
    return id;
  }

  /** The name people use: {@code "SD1.5"} or {@code "SDXL"}. */
  public String displayName() {
    return displayName;
  }

  /** Every module a LoRA can target, in {@link ModuleKey} order. */
  public ImmutableSortedMap<ModuleKey, ModuleSpec> modules() {
    return descriptor.get().modules();
  }

  /** The module {@code key} names, if it is one of this architecture's. */
  public Optional<ModuleSpec> module(ModuleKey key) {
    checkNotNull(key, "key");
    return Optional.ofNullable(descriptor.get().modules().get(key));
  }

  /**
   * Whether a LoRA updating a {@code weightShape} weight may widen module {@code key}'s base
   * weight to it: true only for Flux.1's {@code x_embedder} ({@code img_in}) given more input
   * features than its 64 and its 3072 outputs. BFL's control LoRAs (FLUX.1-Canny-dev-lora,
   * FLUX.1-Depth-dev-lora) train it on 128 inputs, the image latents followed by the
   * conditioning image's; diffusers' {@code FluxLoraLoaderMixin._maybe_expand_transformer_param_shape_or_error_}
   * widens the base's Linear to the LoRA's input features with zero columns (the bias kept) and
   * sets {@code in_channels}, and ComfyUI reads {@code in_channels} of a Flux checkpoint from
   * {@code img_in.weight}'s shape ({@code comfy/model_detection.py}). Every other shape change is
   * a LoRA for another model.
   */
  public boolean widensInput(ModuleKey key, long[] weightShape) {
    checkNotNull(key, "key");
    checkNotNull(weightShape, "weightShape");
    Optional<ModuleSpec> spec = module(key);
    return this == flux() && spec.isPresent() && spec.get().originalPath().equals(Optional.of("img_in"))
        && weightShape.length == 2 && weightShape[0] == spec.get().outFeatures() && weightShape[1] > spec.get().inFeatures();
  }

  /**
   * The scales of the architecture's RMS norms, which no LoRA adapts but a {@linkplain
   * AdapterKind#REPLACEMENT replacement} may replace, in {@link ModuleKey} order: Flux.1's
   * attention norms ({@code transformer_blocks.N.attn.norm_q}, {@code norm_k}, {@code
   * norm_added_q}, {@code norm_added_k}, {@code single_transformer_blocks.N.attn.norm_q}, {@code
   * norm_k}, 128 values each); empty for the others.
   */
  public ImmutableSortedMap<ModuleKey, NormScale> normScales() {
    return descriptor.get().norms();
  }

  /** The norm scale {@code key} names, if it is one of this architecture's. */
  public Optional<NormScale> normScale(ModuleKey key) {
    checkNotNull(key, "key");
    return Optional.ofNullable(descriptor.get().norms().get(key));
  }

  /**
   * Every LBW block id, in the order of an LBW weight vector: SD1.5 has 26 ({@code BASE, IN00}
   * … {@code IN11, M00, OUT00} … {@code OUT11}), SDXL 20 ({@code BASE, IN00} … {@code IN08,
   * M00, OUT00} … {@code OUT08}).
   */
  public ImmutableList<String> blockIds() {
    return descriptor.get().blockIds();
  }

  /**
   * The block ids of LBW's LoRA presets: the blocks that hold attention modules (what a plain
   * LoRA adapts), in the same order. SD1.5 has 17 ({@code BASE, IN01, IN02, IN04, IN05, IN07,
   * IN08, M00, OUT03} … {@code OUT11}), SDXL 12 ({@code BASE, IN04, IN05, IN07, IN08, M00,
   * OUT00} … {@code OUT05}).
   */
  public ImmutableList<String> loraBlockIds() {
    return descriptor.get().loraBlockIds();
  }

  /**
   * The module a kohya module name names, without its {@code .lora_down.weight}-style suffix:
   * {@code lora_unet_} with the underscored diffusers or original path, or the text-encoder
   * prefix of this architecture ({@code lora_te_} for SD1.5, {@code lora_te1_} / {@code
   * lora_te2_} for SDXL) with the underscored path. Empty when the name is not one of this
   * architecture's modules.
   */
  public Optional<ModuleKey> resolveKohyaName(String name) {
    checkNotNull(name, "name");
    return descriptor.get().resolveKohyaName(name);
  }

  /**
   * The name kohya's scripts write for {@code key} in this architecture, e.g. {@code
   * lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q} for SDXL.
   *
   * @throws IllegalArgumentException when {@code key} is not a module of this architecture
   */
  public String kohyaName(ModuleKey key) {
    checkNotNull(key, "key");
    Optional<String> name = descriptor.get().kohyaName(key);
    checkArgument(name.isPresent(), "'%s' is not a module of %s", key, displayName);
    return name.get();
  }

  /**
   * The weights of the original checkpoint that hold several modules stacked by rows, by their
   * original path: Flux's {@code double_blocks.N.img_attn.qkv} and {@code txt_attn.qkv}, {@code
   * single_blocks.N.linear1} and {@code final_layer.adaLN_modulation.1}. Empty for SD1.5 and
   * SDXL. Their parts are modules of {@link #modules()} with no {@link ModuleSpec#originalPath()}.
   */
  public ImmutableMap<String, FusedModule> fusedModules() {
    return descriptor.get().fused();
  }

  /** The fused weight of the original checkpoint that {@code key} is a part of, if any. */
  public Optional<FusedModule> fusedModule(ModuleKey key) {
    checkNotNull(key, "key");
    return descriptor.get().fusedOf(key);
  }

  /**
   * The fused weight a kohya module name names ({@code lora_unet_double_blocks_0_img_attn_qkv}),
   * if it is one of this architecture's.
   */
  public Optional<FusedModule> resolveFusedKohyaName(String name) {
    checkNotNull(name, "name");
    if (!Descriptor.mayNameFused(dialect, name)) {
      return Optional.empty();
    }
    return descriptor.get().resolveFusedKohyaName(name);
  }

  /** The name kohya's scripts write for a fused weight of this architecture. */
  public String kohyaName(FusedModule module) {
    checkNotNull(module, "module");
    checkArgument(
        descriptor.get().fused().get(module.originalPath()) == module, "'%s' is not a fused module of %s",
        module.originalPath(), displayName);
    return descriptor.get().kohyaName(module);
  }

  /** The {@link #displayName()}. */
  @Override
  public String toString() {
    return displayName;
  }
}

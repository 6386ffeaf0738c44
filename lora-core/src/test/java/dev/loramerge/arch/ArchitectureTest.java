package dev.loramerge.arch;

import static java.util.stream.Collectors.counting;
import static java.util.stream.Collectors.groupingBy;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.Component;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.internal.arch.ConfigWalks;
import dev.loramerge.internal.arch.ParameterTally;
import dev.loramerge.synthetic.SyntheticLora;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

class ArchitectureTest {
  static Stream<Architecture> architectures() {
    return Architecture.all().stream();
  }

  private static Architecture byId(String id) {
    return Architecture.byId(id).orElseThrow();
  }

  private static ModuleKey key(String text) {
    return ModuleKey.parse(text);
  }

  /** Module counts per component and layer kind, e.g. {@code "unet LINEAR" -> 184}. */
  private static Map<String, Long> countsByComponentAndKind(Architecture architecture, Predicate<ModuleSpec> filter) {
    return architecture.modules().values().stream()
        .filter(filter)
        .collect(
            groupingBy(spec -> spec.key().component().prefix() + " " + spec.kind(), TreeMap::new, counting()));
  }

  /**
   * kohya's plain LoRA ({@code networks.lora} without conv_dim) targets the UNet's
   * Transformer2DModel blocks and the text encoders' CLIPAttention / CLIPMLP.
   */
  private static boolean isKohyaLoraTarget(ModuleSpec spec) {
    String path = spec.key().path();
    return spec.key().component() == Component.UNET
        ? path.matches("(down_blocks\\.\\d+|mid_block|up_blocks\\.\\d+)\\.attentions\\.\\d+\\..*")
        : path.matches("text_model\\.encoder\\.layers\\.\\d+\\.(self_attn|mlp)\\..*");
  }

  /** With conv_dim (LoCon), kohya also targets ResnetBlock2D, Downsample2D and Upsample2D. */
  private static boolean isKohyaLoconUNetTarget(ModuleSpec spec) {
    return spec.key().component() == Component.UNET
        && spec.key().path().matches("(down_blocks\\.\\d+|mid_block|up_blocks\\.\\d+)\\..*");
  }

  /**
   * {@link Architecture#resolveFusedKohyaName} skips names that cannot be fused ones without
   * generating the architecture's tables; every fused weight must still resolve, and no module's
   * own kohya name may.
   */
  @ParameterizedTest
  @MethodSource("architectures")
  void resolvesEveryFusedKohyaNameAndNoModuleName(Architecture architecture) {
    for (FusedModule module : architecture.fusedModules().values()) {
      assertThat(architecture.resolveFusedKohyaName(architecture.kohyaName(module)))
          .as("%s's fused %s", architecture, module.originalPath())
          .containsSame(module);
    }
    for (ModuleKey key : architecture.modules().keySet()) {
      assertThat(architecture.resolveFusedKohyaName(architecture.kohyaName(key)))
          .as("%s's module %s", architecture, key)
          .isEmpty();
    }
  }

  @Nested
  class ModuleCounts {
    @Test
    void sd15HasEveryLinearAndConvWeightOfItsUNetAndTextEncoder() {
      // UNet: 16 transformers × 10 linear + 22 resnets' time_emb_proj + 2 time embedding = 184
      // linear; 16 × 2 proj_in/proj_out (1×1) + 22 × 2 resnet convs + 14 shortcuts + 3
      // downsamplers + 3 upsamplers + conv_in + conv_out = 98 conv. Text encoder: 12 layers × 6.
      assertThat(countsByComponentAndKind(Architecture.sd15(), spec -> true))
          .as("SD1.5 modules per component and kind")
          .containsExactlyEntriesOf(
              new TreeMap<>(Map.of("unet LINEAR", 184L, "unet CONV", 98L, "text_encoder LINEAR", 72L)));
    }

    @Test
    void sdxlHasEveryLinearAndConvWeightOfItsUNetAndTextEncoders() {
      // UNet: 70 transformer blocks × 10 + 11 transformers × 2 linear projections + 17
      // time_emb_proj + 4 embedding linears = 743 linear; 17 × 2 resnet convs + 11 shortcuts + 2
      // downsamplers + 2 upsamplers + conv_in + conv_out = 51 conv. Text encoders: 12 × 6 and
      // 32 × 6 + text_projection.
      assertThat(countsByComponentAndKind(Architecture.sdxl(), spec -> true))
          .as("SDXL modules per component and kind")
          .containsExactlyEntriesOf(
              new TreeMap<>(
                  Map.of(
                      "unet LINEAR", 743L,
                      "unet CONV", 51L,
                      "text_encoder LINEAR", 72L,
                      "text_encoder_2 LINEAR", 193L)));
    }

    @Test
    void kohyaLoraTargetsNumberWhatKohyaReports() {
      // The module counts kohya's scripts log when they create the network: SD1.5 U-Net 192 and
      // text encoder 72; SDXL U-Net 722 (700 in transformer blocks + 22 proj_in/proj_out) and
      // text encoders 72 + 192 ("enable LoRA for text encoder: 264 modules", sd-scripts#1964).
      assertThat(countsByComponentAndKind(Architecture.sd15(), ArchitectureTest::isKohyaLoraTarget))
          .as("SD1.5 modules of a kohya attention LoRA")
          .containsExactlyEntriesOf(
              new TreeMap<>(Map.of("unet LINEAR", 160L, "unet CONV", 32L, "text_encoder LINEAR", 72L)));
      assertThat(countsByComponentAndKind(Architecture.sdxl(), ArchitectureTest::isKohyaLoraTarget))
          .as("SDXL modules of a kohya attention LoRA")
          .containsExactlyEntriesOf(
              new TreeMap<>(
                  Map.of("unet LINEAR", 722L, "text_encoder LINEAR", 72L, "text_encoder_2 LINEAR", 192L)));
      assertThat(
              Architecture.sdxl().modules().values().stream()
                  .filter(spec -> spec.key().path().contains(".transformer_blocks.")))
          .as("SDXL linear modules inside transformer blocks")
          .hasSize(700);
    }

    @Test
    void kohyaLoconTargetsNumberWhatKohyaReports() {
      // With conv_dim: SD1.5 192 + 22 resnets × 3 + 14 shortcuts + 6 samplers = 278,
      // SDXL 722 + 17 × 3 + 11 + 4 = 788: everything but conv_in/out and the embeddings
      // (LyCORIS's full LoCon logs the same "U-Net: 788 modules" for SDXL, sd-scripts#1964).
      assertThat(Architecture.sd15().modules().values().stream().filter(ArchitectureTest::isKohyaLoconUNetTarget))
          .as("SD1.5 UNet modules of a kohya LoCon")
          .hasSize(278);
      assertThat(Architecture.sdxl().modules().values().stream().filter(ArchitectureTest::isKohyaLoconUNetTarget))
          .as("SDXL UNet modules of a kohya LoCon")
          .hasSize(788);
    }

    @ParameterizedTest(name = "{0} {1}: {2} parameters")
    @CsvSource({
      // The published totals, sum(p.numel()) over the diffusers / transformers models (kohya
      // prints "number of trainable parameters: 2567463684" for the SDXL U-Net, kohya_ss#2639).
      "sd15, UNET,            859520964",
      "sd15, TEXT_ENCODER,    123060480",
      "sdxl, UNET,           2567463684",
      "sdxl, TEXT_ENCODER,    123060480",
      "sdxl, TEXT_ENCODER_2,  694659840",
      // stabilityai/stable-diffusion-2-1: UNet 865,910,724, OpenCLIP ViT-H text tower (23 layers) 340,387,840.
      "sd2,  UNET,            865910724",
      "sd2,  TEXT_ENCODER,    340387840",
    })
    void listedWeightsAddUpToThePublishedParameterCount(String id, Component component, long published) {
      assertThat(ParameterTally.total(byId(id), component))
          .as(
              "%s %s: listed weights plus the biases and norms they imply (a missing module or a"
                  + " wrong size shows here)",
              id,
              component)
          .isEqualTo(published);
    }

    @Test
    void sdxlAddedConditionTakesThePooledTextEmbeddingAndSixTimeIds() {
      // projection_class_embeddings_input_dim 2816 = text_projection output (1280) + 6 size and
      // crop conditions × addition_time_embed_dim (256): the UNet and text encoder configs agree.
      Architecture sdxl = Architecture.sdxl();
      long pooled = sdxl.module(key("text_encoder_2.text_projection")).orElseThrow().outFeatures();
      assertThat(sdxl.module(key("unet.add_embedding.linear_1")).orElseThrow().inFeatures())
          .isEqualTo(pooled + 6 * 256);
    }
  }

  @Nested
  class Shapes {
    @ParameterizedTest(name = "{0} {1} is {2}")
    @CsvSource(
        delimiter = '|',
        value = {
          "sdxl | unet.down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k | 1280, 2048",
          "sdxl | unet.up_blocks.0.resnets.0.conv1                            | 1280, 2560, 3, 3",
          "sd15 | unet.down_blocks.0.attentions.0.proj_in                     | 320, 320, 1, 1",
          "sdxl | text_encoder_2.text_model.encoder.layers.31.mlp.fc1         | 5120, 1280",
          "sd15 | unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k | 320, 768",
          "sd15 | unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj | 2560, 320",
          "sd15 | unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2 | 320, 1280",
          "sd15 | unet.up_blocks.1.resnets.2.conv_shortcut                    | 1280, 1920, 1, 1",
          "sd15 | unet.up_blocks.3.resnets.0.conv1                            | 320, 960, 3, 3",
          "sd15 | unet.down_blocks.1.resnets.0.time_emb_proj                  | 640, 1280",
          "sd15 | unet.time_embedding.linear_1                                | 1280, 320",
          "sd15 | unet.conv_in                                                | 320, 4, 3, 3",
          "sd15 | unet.conv_out                                               | 4, 320, 3, 3",
          "sd15 | text_encoder.text_model.encoder.layers.11.mlp.fc2           | 768, 3072",
          "sdxl | unet.down_blocks.1.attentions.0.proj_in                     | 640, 640",
          "sdxl | unet.mid_block.attentions.0.transformer_blocks.9.ff.net.0.proj | 10240, 1280",
          "sdxl | unet.up_blocks.1.resnets.2.conv1                            | 640, 960, 3, 3",
          "sdxl | unet.down_blocks.0.downsamplers.0.conv                      | 320, 320, 3, 3",
          "sdxl | unet.add_embedding.linear_1                                 | 1280, 2816",
          "sdxl | text_encoder.text_model.encoder.layers.11.self_attn.out_proj | 768, 768",
          "sdxl | text_encoder_2.text_projection                              | 1280, 1280",
        })
    void knownModulesHaveTheirPublishedShapes(String id, String key, String shape) {
      long[] expected = Stream.of(shape.split(",")).mapToLong(dim -> Long.parseLong(dim.trim())).toArray();
      Optional<ModuleSpec> spec = byId(id).module(key(key));
      assertThat(spec).as("%s has module '%s'", id, key).isPresent();
      assertThat(spec.get().weightShape()).as("%s '%s' weight shape", id, key).containsExactly(expected);
    }

    @ParameterizedTest(name = "{0} has no {1}")
    @CsvSource({
      "sd15, text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj",
      "sd15, unet.add_embedding.linear_1",
      "sd15, unet.down_blocks.3.attentions.0.proj_in",
      "sd15, unet.up_blocks.3.upsamplers.0.conv",
      "sdxl, unet.down_blocks.0.attentions.0.proj_in",
      "sdxl, unet.down_blocks.2.downsamplers.0.conv",
      "sdxl, unet.up_blocks.2.upsamplers.0.conv",
      "sdxl, unet.down_blocks.0.resnets.0.conv_shortcut",
      "sdxl, text_encoder.text_projection",
    })
    void modulesTheModelDoesNotBuildAreAbsent(String id, String key) {
      assertThat(byId(id).module(key(key))).as("%s module '%s'", id, key).isEmpty();
    }

    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void linearLayersHaveKernelOneAndConvolutionsOneOrThree(Architecture architecture) {
      // SD3's patch embedding is the one exception: a 2×2 convolution with stride 2.
      assertThat(architecture.modules().values())
          .filteredOn(spec -> !spec.key().toString().equals("transformer.pos_embed.proj"))
          .allSatisfy(
              spec ->
                  assertThat(spec.kernelSize())
                      .as("kernel size of %s", spec.key())
                      .isIn(spec.kind() == LoraModule.Kind.LINEAR ? List.of(1) : List.of(1, 3)));
    }

    @Test
    void sd15ProjectsWithOneByOneConvolutionsAndSdxlWithLinearLayers() {
      assertThat(Architecture.sd15().modules().values().stream().filter(spec -> spec.key().path().endsWith("proj_in")))
          .as("SD1.5 proj_in (use_linear_projection false)")
          .hasSize(16)
          .allMatch(spec -> spec.kind() == LoraModule.Kind.CONV && spec.kernelSize() == 1);
      assertThat(Architecture.sdxl().modules().values().stream().filter(spec -> spec.key().path().endsWith("proj_out")))
          .as("SDXL proj_out (use_linear_projection true)")
          .hasSize(11)
          .allMatch(spec -> spec.kind() == LoraModule.Kind.LINEAR);
    }
  }

  @Nested
  class BlocksAndOriginalNames {
    @ParameterizedTest(name = "{0} {1} is {2} in {3}")
    @CsvSource(
        delimiter = '|',
        value = {
          "sdxl | unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q | input_blocks.4.1.transformer_blocks.0.attn1.to_q | IN04",
          "sdxl | unet.down_blocks.0.resnets.0.conv1           | input_blocks.1.0.in_layers.2      | IN01",
          "sdxl | unet.down_blocks.0.resnets.1.conv2           | input_blocks.2.0.out_layers.3     | IN02",
          "sdxl | unet.down_blocks.1.resnets.0.time_emb_proj   | input_blocks.4.0.emb_layers.1     | IN04",
          "sdxl | unet.down_blocks.1.resnets.0.conv_shortcut   | input_blocks.4.0.skip_connection  | IN04",
          "sdxl | unet.down_blocks.0.downsamplers.0.conv       | input_blocks.3.0.op               | IN03",
          "sdxl | unet.down_blocks.1.downsamplers.0.conv       | input_blocks.6.0.op               | IN06",
          "sdxl | unet.down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2 | input_blocks.8.1.transformer_blocks.9.ff.net.2 | IN08",
          "sdxl | unet.mid_block.resnets.0.conv1               | middle_block.0.in_layers.2        | M00",
          "sdxl | unet.mid_block.attentions.0.proj_in          | middle_block.1.proj_in            | M00",
          "sdxl | unet.mid_block.resnets.1.conv2               | middle_block.2.out_layers.3       | M00",
          "sdxl | unet.up_blocks.0.resnets.0.conv1             | output_blocks.0.0.in_layers.2     | OUT00",
          "sdxl | unet.up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_v | output_blocks.2.1.transformer_blocks.9.attn2.to_v | OUT02",
          "sdxl | unet.up_blocks.0.upsamplers.0.conv           | output_blocks.2.2.conv            | OUT02",
          "sdxl | unet.up_blocks.1.upsamplers.0.conv           | output_blocks.5.2.conv            | OUT05",
          "sdxl | unet.up_blocks.2.resnets.2.conv_shortcut     | output_blocks.8.0.skip_connection | OUT08",
          "sdxl | unet.conv_in                                 | input_blocks.0.0                  | IN00",
          "sdxl | unet.conv_out                                | out.2                             | -",
          "sdxl | unet.time_embedding.linear_1                 | time_embed.0                      | -",
          "sdxl | unet.time_embedding.linear_2                 | time_embed.2                      | -",
          "sdxl | unet.add_embedding.linear_1                  | label_emb.0.0                     | -",
          "sdxl | unet.add_embedding.linear_2                  | label_emb.0.2                     | -",
          "sdxl | text_encoder.text_model.encoder.layers.0.self_attn.q_proj | -                    | BASE",
          "sdxl | text_encoder_2.text_projection               | -                                 | BASE",
          "sd15 | unet.down_blocks.0.attentions.0.proj_in      | input_blocks.1.1.proj_in          | IN01",
          "sd15 | unet.down_blocks.2.downsamplers.0.conv       | input_blocks.9.0.op               | IN09",
          "sd15 | unet.down_blocks.3.resnets.1.conv2           | input_blocks.11.0.out_layers.3    | IN11",
          "sd15 | unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_k | middle_block.1.transformer_blocks.0.attn1.to_k | M00",
          "sd15 | unet.up_blocks.0.resnets.2.conv1             | output_blocks.2.0.in_layers.2     | OUT02",
          "sd15 | unet.up_blocks.0.upsamplers.0.conv           | output_blocks.2.1.conv            | OUT02",
          "sd15 | unet.up_blocks.1.upsamplers.0.conv           | output_blocks.5.2.conv            | OUT05",
          "sd15 | unet.up_blocks.3.attentions.2.proj_out       | output_blocks.11.1.proj_out       | OUT11",
          "sd15 | unet.conv_in                                 | input_blocks.0.0                  | IN00",
          "sd15 | unet.conv_out                                | out.2                             | -",
          "sd15 | unet.time_embedding.linear_1                 | time_embed.0                      | -",
          "sd15 | text_encoder.text_model.encoder.layers.11.mlp.fc1 | -                            | BASE",
        })
    void sampleModulesHaveTheirOriginalNameAndBlock(String id, String key, String original, String block) {
      ModuleSpec spec = byId(id).module(key(key)).orElseThrow();
      assertThat(spec.originalPath()).as("%s '%s' original path", id, key).isEqualTo(optional(original));
      assertThat(spec.blockId()).as("%s '%s' block", id, key).isEqualTo(optional(block));
    }

    private Optional<String> optional(String value) {
      return value.equals("-") ? Optional.empty() : Optional.of(value);
    }

    private final Pattern sampled =
        Pattern.compile("(down|up)_blocks\\.(\\d+)\\.(resnets|attentions|downsamplers|upsamplers)\\.(\\d+)\\..*");

    /**
     * The block map written in diffusers names (the LBW README's and diffusers'
     * {@code _maybe_map_sgm_blocks_to_diffusers} arithmetic for layers_per_block 2), checked
     * independently of the walk's original-name counter.
     */
    private Optional<String> blockByDiffusersName(String path) {
      if (path.equals("conv_in")) {
        return Optional.of("IN00");
      }
      if (path.startsWith("mid_block.")) {
        return Optional.of("M00");
      }
      Matcher matcher = sampled.matcher(path);
      if (!matcher.matches()) {
        return Optional.empty();
      }
      int b = Integer.parseInt(matcher.group(2));
      int j = Integer.parseInt(matcher.group(4));
      boolean sampler = matcher.group(3).endsWith("samplers");
      return matcher.group(1).equals("down")
          ? Optional.of(String.format(Locale.ROOT, "IN%02d", sampler ? 3 * b + 3 : 3 * b + j + 1))
          : Optional.of(String.format(Locale.ROOT, "OUT%02d", sampler ? 3 * b + 2 : 3 * b + j));
    }

    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void everyUNetModuleIsInTheBlockItsDiffusersNameMapsTo(Architecture architecture) {
      assertThat(architecture.modules().values())
          .filteredOn(spec -> spec.key().component() == Component.UNET)
          .allSatisfy(
              spec ->
                  assertThat(spec.blockId())
                      .as("%s block of '%s' (original '%s')", architecture, spec.key(), spec.originalPath())
                      .isEqualTo(blockByDiffusersName(spec.key().path())));
    }

    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void onlyDenoiserModulesHaveOriginalNamesAndOnlyTextEncodersAreBase(Architecture architecture) {
      assertThat(architecture.modules().values())
          .allSatisfy(
              spec -> {
                boolean denoiser =
                    spec.key().component() == Component.UNET || spec.key().component() == Component.TRANSFORMER;
                boolean fusedPart = architecture.fusedModule(spec.key()).isPresent();
                assertThat(spec.originalPath().isPresent())
                    .as("'%s' has an original path", spec.key())
                    .isEqualTo(denoiser && !fusedPart);
                assertThat(spec.blockId().equals(Optional.of("BASE")))
                    .as("'%s' is in BASE", spec.key())
                    .isEqualTo(!denoiser);
              });
    }

    @Test
    void blockIdsListEveryLbwBlockInVectorOrder() {
      assertThat(Architecture.sd15().blockIds())
          .as("SD1.5 block ids (LBW's 26)")
          .containsExactlyElementsOf(ids(12));
      assertThat(Architecture.sdxl().blockIds())
          .as("SDXL block ids (LBW's 20)")
          .containsExactlyElementsOf(ids(9));
    }

    private List<String> ids(int perSide) {
      List<String> ids = new ArrayList<>();
      ids.add("BASE");
      IntStream.range(0, perSide).forEach(i -> ids.add(String.format(Locale.ROOT, "IN%02d", i)));
      ids.add("M00");
      IntStream.range(0, perSide).forEach(i -> ids.add(String.format(Locale.ROOT, "OUT%02d", i)));
      return ids;
    }

    @Test
    void loraBlockIdsAreLbwsLoraPresets() {
      assertThat(Architecture.sd15().loraBlockIds())
          .as("SD1.5 LoRA block ids (LBW's 17)")
          .containsExactly(
              "BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05",
              "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11");
      assertThat(Architecture.sdxl().loraBlockIds())
          .as("SDXL LoRA block ids (LBW's 12)")
          .containsExactly("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05");
    }

    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void loraBlockIdsAreExactlyTheBlocksHoldingAttention(Architecture architecture) {
      Set<String> withAttention =
          architecture.modules().values().stream()
              .filter(spec -> spec.key().path().matches(".*\\.(attn|attn1|attn2|self_attn)\\..*"))
              .map(spec -> spec.blockId().orElseThrow())
              .collect(Collectors.toCollection(LinkedHashSet::new));
      assertThat(architecture.loraBlockIds())
          .as("%s blocks holding attention modules", architecture)
          .containsExactlyInAnyOrderElementsOf(withAttention)
          .isSubsetOf(architecture.blockIds());
      assertThat(architecture.blockIds()).as("%s block order", architecture).containsSubsequence(architecture.loraBlockIds());
    }
  }

  @Nested
  class KohyaNames {
    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void everyModuleRoundTripsThroughItsKohyaName(Architecture architecture) {
      assertThat(architecture.modules().keySet())
          .allSatisfy(
              key ->
                  assertThat(architecture.resolveKohyaName(architecture.kohyaName(key)))
                      .as("%s: '%s' → '%s'", architecture, key, architecture.kohyaName(key))
                      .contains(key));
    }

    @Test
    void sd15WritesDiffusersPathsAndSdxlOriginalPaths() {
      Architecture sd15 = Architecture.sd15();
      Architecture sdxl = Architecture.sdxl();
      assertThat(sd15.kohyaName(key("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0")))
          .isEqualTo("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0");
      assertThat(sd15.kohyaName(key("text_encoder.text_model.encoder.layers.0.self_attn.q_proj")))
          .isEqualTo("lora_te_text_model_encoder_layers_0_self_attn_q_proj");
      assertThat(sdxl.kohyaName(key("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")))
          .isEqualTo("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q");
      assertThat(sdxl.kohyaName(key("unet.down_blocks.0.resnets.0.conv1")))
          .isEqualTo("lora_unet_input_blocks_1_0_in_layers_2");
      assertThat(sdxl.kohyaName(key("unet.add_embedding.linear_2"))).isEqualTo("lora_unet_label_emb_0_2");
      assertThat(sdxl.kohyaName(key("text_encoder.text_model.encoder.layers.0.self_attn.q_proj")))
          .isEqualTo("lora_te1_text_model_encoder_layers_0_self_attn_q_proj");
      assertThat(sdxl.kohyaName(key("text_encoder_2.text_model.encoder.layers.31.mlp.fc1")))
          .isEqualTo("lora_te2_text_model_encoder_layers_31_mlp_fc1");
      for (ModuleSpec spec : sd15.modules().values()) {
        if (spec.key().component() == Component.UNET) {
          assertThat(sd15.kohyaName(spec.key())).isEqualTo("lora_unet_" + spec.key().path().replace('.', '_'));
        }
      }
      for (ModuleSpec spec : sdxl.modules().values()) {
        if (spec.key().component() == Component.UNET) {
          assertThat(sdxl.kohyaName(spec.key()))
              .isEqualTo("lora_unet_" + spec.originalPath().orElseThrow().replace('.', '_'));
        }
      }
    }

    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void everyUNetModuleResolvesUnderBothSpellings(Architecture architecture) {
      assertThat(architecture.modules().values())
          .filteredOn(spec -> spec.key().component() == Component.UNET)
          .allSatisfy(
              spec -> {
                String diffusers = "lora_unet_" + spec.key().path().replace('.', '_');
                String original = "lora_unet_" + spec.originalPath().orElseThrow().replace('.', '_');
                assertThat(architecture.resolveKohyaName(diffusers)).as("%s '%s'", architecture, diffusers).contains(spec.key());
                assertThat(architecture.resolveKohyaName(original)).as("%s '%s'", architecture, original).contains(spec.key());
              });
    }

    @ParameterizedTest(name = "{0}: {1}")
    @CsvSource({
      "sd15, lora_unet_down_blocks_0_attentions_0_proj_in, unet.down_blocks.0.attentions.0.proj_in",
      "sd15, lora_unet_input_blocks_1_1_proj_in, unet.down_blocks.0.attentions.0.proj_in",
      "sd15, lora_te_text_model_encoder_layers_0_self_attn_q_proj, text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
      "sdxl, lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q, unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
      "sdxl, lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q, unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
      "sdxl, lora_unet_output_blocks_2_2_conv, unet.up_blocks.0.upsamplers.0.conv",
      "sdxl, lora_unet_out_2, unet.conv_out",
      "sdxl, lora_te1_text_model_encoder_layers_11_mlp_fc2, text_encoder.text_model.encoder.layers.11.mlp.fc2",
      "sdxl, lora_te2_text_model_encoder_layers_31_self_attn_out_proj, text_encoder_2.text_model.encoder.layers.31.self_attn.out_proj",
      "sdxl, lora_te2_text_projection, text_encoder_2.text_projection",
    })
    void resolvesKohyaNames(String id, String name, String expected) {
      assertThat(byId(id).resolveKohyaName(name)).as("%s resolves '%s'", id, name).contains(key(expected));
    }

    @ParameterizedTest(name = "{0}: {1}")
    @CsvSource({
      "sd15, lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
      "sd15, lora_unet_down_blocks_0_attentions_0_proj",
      "sd15, lora_unet_down_blocks_9_attentions_0_proj_in",
      "sd15, lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
      "sd15, lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
      "sd15, lora_unet_add_embedding_linear_1",
      "sd15, down_blocks_0_attentions_0_proj_in",
      "sd15, ''",
      "sdxl, lora_te_text_model_encoder_layers_0_self_attn_q_proj",
      "sdxl, lora_unet_down_blocks_0_attentions_0_proj_in",
      "sdxl, lora_unet_input_blocks_1_1_proj_in",
      "sdxl, lora_te1_text_projection",
      "sdxl, lora_unet_diffusion_model_input_blocks_4_1_proj_in",
    })
    void unknownNamesResolveToNothing(String id, String name) {
      assertThat(byId(id).resolveKohyaName(name)).as("%s resolves '%s'", id, name).isEmpty();
    }

    @Test
    void kohyaNameOfAForeignModuleIsRejected() {
      assertThatThrownBy(() -> Architecture.sd15().kohyaName(key("unet.add_embedding.linear_1")))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("'unet.add_embedding.linear_1' is not a module of SD1.5");
    }
  }

  @Nested
  class Identity {
    @Test
    void architecturesAreFoundByIdAndPrintTheirName() {
      assertThat(Architecture.all())
          .containsExactly(
              Architecture.sd15(), Architecture.sdxl(), Architecture.flux(), Architecture.sd2(),
              Architecture.sd35Medium(), Architecture.sd35Large());
      assertThat(Architecture.byId("sd2")).containsSame(Architecture.sd2());
      assertThat(Architecture.byId("sd15")).containsSame(Architecture.sd15());
      assertThat(Architecture.byId("sdxl")).containsSame(Architecture.sdxl());
      assertThat(Architecture.byId("flux")).containsSame(Architecture.flux());
      assertThat(Architecture.byId("sd3")).isEmpty();
      assertThat(Architecture.sd15().id()).isEqualTo("sd15");
      assertThat(Architecture.sdxl().displayName()).isEqualTo("SDXL");
      assertThat(Architecture.sd15()).hasToString("SD1.5");
    }

    @ParameterizedTest
    @MethodSource("dev.loramerge.arch.ArchitectureTest#architectures")
    void modulesAreSortedAndFoundByKey(Architecture architecture) {
      assertThat(List.copyOf(architecture.modules().keySet())).as("%s module order", architecture).isSorted();
      assertThat(architecture.modules())
          .allSatisfy((key, spec) -> assertThat(spec.key()).isEqualTo(key))
          .allSatisfy((key, spec) -> assertThat(architecture.module(key)).containsSame(spec));
    }
  }

  @Nested
  class Detection {
    private LoraAdapter adapterOf(Architecture architecture, String... paths) {
      Set<String> wanted = Set.of(paths);
      return SyntheticLora.builder(architecture)
          .modules(spec -> wanted.contains(spec.key().toString()))
          .rank(1)
          .build();
    }

    @Test
    void detectsTheArchitectureWhoseModulesAndShapesFitEveryModule() {
      // attn2.to_k exists in both, but its keys come from 768 (SD1.5) or 2048 (SDXL) features.
      String crossAttentionKey = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k";
      assertThat(Architecture.detect(adapterOf(Architecture.sd15(), crossAttentionKey)))
          .containsSame(Architecture.sd15());
      assertThat(Architecture.detect(adapterOf(Architecture.sdxl(), crossAttentionKey)))
          .containsSame(Architecture.sdxl());
      assertThat(Architecture.detect(adapterOf(Architecture.sdxl(), "text_encoder_2.text_projection")))
          .containsSame(Architecture.sdxl());
    }

    @Test
    void detectsNothingForAnEmptyOrMixedAdapter() {
      LoraAdapter sd15 = adapterOf(Architecture.sd15(), "unet.down_blocks.0.attentions.0.proj_in");
      LoraAdapter sdxl = adapterOf(Architecture.sdxl(), "unet.add_embedding.linear_1");
      LoraAdapter.Builder mixed = sd15.toBuilder();
      sdxl.modules().values().forEach(mixed::add);
      assertThat(Architecture.detect(mixed.build())).isEmpty();
      assertThat(Architecture.detect(LoraAdapter.builder().build())).isEmpty();
    }
  }

  @Nested
  class Specs {
    private final ModuleKey key = key("unet.conv_in");

    @Test
    void weightShapeIsACopy() {
      ModuleSpec spec = Architecture.sd15().module(key).orElseThrow();
      spec.weightShape()[0] = 7;
      assertThat(spec.weightShape()).containsExactly(320, 4, 3, 3);
    }

    @Test
    void rejectsALinearLayerWithAKernelAndNonPositiveSizes() {
      assertThatThrownBy(
              () -> new ModuleSpec(key, LoraModule.Kind.LINEAR, 4, 4, 3, Optional.empty(), Optional.empty()))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("module 'unet.conv_in': a linear layer has kernel size 1, got 3");
      assertThatThrownBy(() -> new ModuleSpec(key, LoraModule.Kind.CONV, 0, 4, 3, Optional.empty(), Optional.empty()))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("module 'unet.conv_in': features must be positive, got in 0 and out 4");
    }
  }

  @Nested
  class Walk {
    private static final String TINY =
        "{\"_class_name\": \"UNet2DConditionModel\", \"block_out_channels\": [32, 64],"
            + " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
            + " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"], \"layers_per_block\": 1,"
            + " \"attention_head_dim\": 8, \"cross_attention_dim\": 16%s}";

    @Test
    void followsTheConfigRatherThanSdShapes() throws Exception {
      // One resnet per down block, two per up block: the original numbering is a running count.
      Map<String, ModuleSpec> specs =
          ConfigWalks.unet(String.format(Locale.ROOT, TINY, "")).stream()
              .collect(Collectors.toMap(spec -> spec.key().path(), spec -> spec));
      assertThat(specs.get("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k").weightShape())
          .containsExactly(32, 16);
      assertThat(specs.get("down_blocks.0.downsamplers.0.conv").originalPath()).contains("input_blocks.2.0.op");
      assertThat(specs.get("down_blocks.1.resnets.0.conv_shortcut").originalPath())
          .contains("input_blocks.3.0.skip_connection");
      assertThat(specs.get("up_blocks.0.upsamplers.0.conv").originalPath()).contains("output_blocks.1.1.conv");
      assertThat(specs.get("up_blocks.1.resnets.1.conv1").weightShape()).containsExactly(32, 64, 3, 3);
      assertThat(specs.get("up_blocks.1.attentions.1.proj_out").originalPath()).contains("output_blocks.3.1.proj_out");
    }

    @Test
    void refusesAnOptionThatWouldChangeTheLayers() {
      String scaleShift = String.format(Locale.ROOT, TINY, ", \"resnet_time_scale_shift\": \"scale_shift\"");
      assertThatThrownBy(() -> ConfigWalks.unet(scaleShift))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage(
              "test config: 'resnet_time_scale_shift' is the string 'scale_shift', which changes the"
                  + " model's layers in a way this walk does not model; supported: [default]");
      String unknownBlock = String.format(Locale.ROOT, TINY, "").replace("\"DownBlock2D\"", "\"AttnDownBlock2D\"");
      assertThatThrownBy(() -> ConfigWalks.unet(unknownBlock))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage(
              "test config: block type 'AttnDownBlock2D' is not modelled; supported: CrossAttnDownBlock2D, DownBlock2D");
    }
  }
}

package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.Component;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.synthetic.SyntheticLora;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Formats on SD-shaped adapters, and what happens to input that does not fit. */
class LoraFilesTest {
  @TempDir Path temp;

  private static TensorData zeros(long... shape) {
    return TensorData.ofFloats(new float[Math.toIntExact(TensorData.numel(shape))], shape);
  }

  private Path kohyaFile(Map<String, TensorData> tensors) throws IOException {
    Path file = temp.resolve("input.safetensors");
    Safetensors.write(file, tensors, Map.of());
    return file;
  }

  @Test
  void sdxlKohyaFilesUseOriginalNamesAndReadBackToDiffusersKeys() throws IOException {
    LoraAdapter adapter =
        SyntheticLora.builder(Architecture.sdxl())
            .modules(spec -> spec.blockId().map(id -> id.equals("IN04")).orElse(false) || spec.key().component() == Component.TEXT_ENCODER_2 && spec.key().path().contains("layers.0."))
            .rank(2)
            .seed(3)
            .build();
    Path file = temp.resolve("sdxl.safetensors");
    LoraFiles.write(adapter, file, LoraFormat.KOHYA);
    try (SafetensorsFile written = SafetensorsFile.open(file)) {
      assertThat(written.contains("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"))
          .as("kohya writes SDXL modules under their original (sgm) names")
          .isTrue();
      assertThat(written.contains("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight")).isTrue();
    }
    LoraAdapter read = LoraFiles.read(file);
    assertThat(read.modules().keySet()).isEqualTo(adapter.modules().keySet());
    assertThat(Architecture.detect(read)).contains(Architecture.sdxl());
    LoraAdapter withDiffusersBase =
        LoraFiles.read(file, LoraReadOptions.builder().baseKeys(java.util.List.of("conv_in.weight", "down_blocks.0.resnets.0.conv1.weight")).build());
    assertThat(withDiffusersBase.modules().keySet())
        .as("original names resolve through SDXL's descriptor when the base's diffusers keys cannot")
        .isEqualTo(read.modules().keySet());
    assertThat(read.module(ModuleKey.parse("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"))).isPresent();
  }

  @Test
  void missingAlphaMeansAlphaEqualsRank() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", zeros(4, 16));
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", zeros(16, 4));
    LoraAdapter read = LoraFiles.read(kohyaFile(tensors));
    assertThat(read.modules().values()).singleElement().satisfies(module -> {
      assertThat(module.alpha()).isEqualTo(4);
      assertThat(module.scale()).isEqualTo(1);
    });
  }

  @Test
  void unreadableTensorsAreReportedByName() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    // LyCORIS OFT (lycoris/modules/diag_oft.py) and a stray key: no kind this library reads.
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.oft_blocks", zeros(4, 4, 4));
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.rescale", zeros(16, 1));
    tensors.put("lora_unet_mid_block_attentions_0_proj_out.lora_down.weight", zeros(4, 16));
    tensors.put("lora_unet_mid_block_attentions_0_proj_out.lora_up.weight", zeros(16, 4));
    tensors.put("lora_unet_mid_block_attentions_0_proj_out.scale_b", zeros(16));
    Path file = kohyaFile(tensors);
    assertThatThrownBy(() -> LoraFiles.read(file))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "input.safetensors: 3 tensors cannot be read as the tensors of a LoRA, LoCon, LoHa, LoKr, DoRA or full"
                + " difference (unknown keys):"
                + " 'lora_unet_mid_block_attentions_0_proj_in.oft_blocks',"
                + " 'lora_unet_mid_block_attentions_0_proj_in.rescale',"
                + " 'lora_unet_mid_block_attentions_0_proj_out.scale_b'; skipUnsupported(true) drops them");
    LoraAdapter kept = LoraFiles.read(file, LoraReadOptions.builder().skipUnsupported(true).build());
    assertThat(kept.modules().keySet()).containsExactly(ModuleKey.parse("unet.mid_block.attentions.0.proj_out"));
  }

  @Test
  void anIncompleteLohaNamesTheFileTheModuleAndWhatItNeeds() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.hada_w1_a", zeros(16, 4));
    tensors.put("lora_unet_mid_block_attentions_0_proj_in.hada_w1_b", zeros(4, 16));
    Path file = kohyaFile(tensors);
    assertThatThrownBy(() -> LoraFiles.read(file))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "input.safetensors: module 'lora_unet_mid_block_attentions_0_proj_in': a LoHa needs [hada_w1_a,"
                + " hada_w1_b, hada_w2_a, hada_w2_b], found [hada_w1_a, hada_w1_b]");
  }

  @Test
  void aModuleWithOneFactorIsAnError() throws IOException {
    Path file = kohyaFile(Map.of("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", zeros(4, 16)));
    assertThatThrownBy(() -> LoraFiles.read(file))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("input.safetensors: module 'lora_unet_mid_block_attentions_0_proj_in' has a down but no up factor");
  }

  @Test
  void aNameNothingResolvesIsNamed() throws IOException {
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("lora_unet_my_custom_block_proj.lora_down.weight", zeros(4, 16));
    tensors.put("lora_unet_my_custom_block_proj.lora_up.weight", zeros(16, 4));
    Path file = kohyaFile(tensors);
    assertThatThrownBy(() -> LoraFiles.read(file))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "input.safetensors: cannot resolve kohya module name 'lora_unet_my_custom_block_proj': it is not a module of"
                + " SD1.5 or SDXL or Flux.1 or SD2.x or SD3.5 Medium or SD3.5 Large, not in the base weights given, and not a diffusers module name; give the"
                + " model's weight names (baseKeys)");
    LoraAdapter viaBase =
        LoraFiles.read(
            file, LoraReadOptions.builder().baseKeys(java.util.List.of("my_custom.block_proj.weight", "my_custom.block_proj.bias")).build());
    assertThat(viaBase.modules().keySet()).containsExactly(ModuleKey.parse("unet.my_custom.block_proj"));
  }

  @Test
  void rsLoraSurvivesPeftAndBecomesAnEquivalentAlphaInKohya() throws IOException {
    ModuleKey key = ModuleKey.parse("unet.mid_block.attentions.0.proj_in");
    TensorData down = TensorData.ofFloats(new float[] {1, 2, 3, 4, 5, 6, 7, 8}, 4, 2);
    TensorData up = TensorData.ofFloats(new float[] {1, 0, 0, 1, 1, 1, 0, 2}, 2, 4);
    LoraAdapter adapter =
        LoraAdapter.builder().add(dev.loramerge.LoraModule.of(key, down, up, 8, ScaleRule.RSLORA)).build();
    Path peft = temp.resolve("peft");
    LoraFiles.write(adapter, peft, LoraFormat.PEFT);
    assertThat(Files.readString(peft.resolve("adapter_config.json"))).contains("\"use_rslora\" : true");
    assertThat(LoraFiles.read(peft).modules().get(key).scale()).isEqualTo(4.0);
    Path kohya = temp.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    var module = LoraFiles.read(kohya).modules().get(key);
    assertThat(module.alpha()).isEqualTo(16.0);
    assertThat(module.scale()).isEqualTo(4.0);
  }

  @Test
  void mixedRanksAndAlphasGoToPeftPatterns() throws IOException {
    LoraAdapter a = SyntheticLora.builder(Architecture.sd15()).modules(LoraFilesTest::inFirstBlock).rank(4).alpha(4).build();
    ModuleKey odd = a.modules().firstKey();
    LoraAdapter mixed =
        a.toBuilder()
            .put(dev.loramerge.LoraModule.of(odd, zeros(2, a.modules().get(odd).inFeatures()), zeros(a.modules().get(odd).outFeatures(), 2), 1))
            .build();
    Path peft = temp.resolve("mixed");
    LoraFiles.write(mixed, peft, LoraFormat.PEFT);
    String config = Files.readString(peft.resolve("adapter_config.json"));
    assertThat(config).contains("\"rank_pattern\" : {\n    \"" + odd.path() + "\" : 2\n  }");
    assertThat(config).contains("\"alpha_pattern\" : {\n    \"" + odd.path() + "\" : 1\n  }");
    LoraAdapter read = LoraFiles.read(peft);
    assertThat(read.modules().get(odd).alpha()).isEqualTo(1);
    assertThat(read.modules().get(odd).rank()).isEqualTo(2);
  }

  private static boolean inFirstBlock(ModuleSpec spec) {
    return spec.key().path().startsWith("down_blocks.0.attentions.0.transformer_blocks.0.attn1");
  }
}

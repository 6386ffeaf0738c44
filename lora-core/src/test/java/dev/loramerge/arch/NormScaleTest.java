package dev.loramerge.arch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.loramerge.AdapterKind;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/**
 * Flux.1's attention norm scales, which BFL's control LoRAs replace: 4 per double block ({@code
 * attn.norm_q}, {@code norm_k}, {@code norm_added_q}, {@code norm_added_k}) and 2 per single block,
 * 128 values each ({@code attention_head_dim}), named in BFL's checkpoint as diffusers' {@code
 * scripts/convert_flux_to_diffusers.py} and {@code _convert_bfl_flux_control_lora_to_diffusers}
 * map them ({@code img_attn.norm.query_norm.scale} → {@code attn.norm_q.weight}, {@code
 * txt_attn.norm.key_norm.scale} → {@code attn.norm_added_k.weight}, {@code
 * single_blocks.N.norm.query_norm.scale} → {@code single_transformer_blocks.N.attn.norm_q.weight}).
 */
class NormScaleTest {
  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  private static TensorData values(int count, double start) {
    double[] values = new double[count];
    for (int i = 0; i < count; i++) {
      values[i] = start + i / 64.0;
    }
    return TensorData.ofDoubles(values, DType.BF16, count);
  }

  @Test
  void fluxHasTheAttentionNormsOfEveryBlockAndNoOtherArchitectureHasAny() {
    Architecture flux = Architecture.flux();
    assertThat(flux.normScales()).hasSize(19 * 4 + 38 * 2);
    assertThat(flux.normScales().values()).allSatisfy(norm -> assertThat(norm.weightShape()).containsExactly(128));
    assertThat(flux.normScale(key("transformer_blocks.18.attn.norm_added_k")))
        .contains(new NormScale(key("transformer_blocks.18.attn.norm_added_k"), 128, Optional.of("double_blocks.18"),
            "double_blocks.18.txt_attn.norm.key_norm"));
    assertThat(flux.normScale(key("single_transformer_blocks.37.attn.norm_q")))
        .contains(new NormScale(key("single_transformer_blocks.37.attn.norm_q"), 128, Optional.of("single_blocks.37"),
            "single_blocks.37.norm.query_norm"));
    assertThat(flux.modules().keySet()).as("no LoRA targets a norm").doesNotContainAnyElementsOf(flux.normScales().keySet());
    for (Architecture other : new Architecture[] {
        Architecture.sd15(), Architecture.sdxl(), Architecture.sd2(), Architecture.sd35Medium(), Architecture.sd35Large()}) {
      assertThat(other.normScales()).as(other.displayName()).isEmpty();
    }
  }

  @Test
  void anAdapterWithNormReplacementsIsDetectedAsFluxOnlyWithTheNormsShape() {
    LoraModule norm = LoraModule.replacement(key("transformer_blocks.0.attn.norm_q"), values(128, 0.5));
    assertThat(Architecture.detect(LoraAdapter.builder().name("canny").add(norm).build())).contains(Architecture.flux());
    LoraModule narrow = LoraModule.replacement(key("transformer_blocks.0.attn.norm_q"), values(64, 0.5));
    assertThat(Architecture.detect(LoraAdapter.builder().name("narrow").add(narrow).build())).isEmpty();
  }

  @Test
  void aReplacementIsTheFusedWeightAtAnyWeightButZeroAndHasNoUpdate() {
    TensorData scale = values(128, 0.5);
    LoraModule norm = LoraModule.replacement(key("transformer_blocks.0.attn.norm_k"), scale);
    assertThat(norm.adapterKind()).isEqualTo(AdapterKind.REPLACEMENT);
    assertThat(norm.kindName()).isEqualTo("replacement");
    assertThat(norm.isPlainLora()).isFalse();
    double[] base = new double[128];
    java.util.Arrays.fill(base, 1);
    assertThat(norm.fusedF64(base, 0.3)).as("w does not scale it").containsExactly(scale.toDoubleArray());
    assertThat(norm.fusedF64(base, -2)).containsExactly(scale.toDoubleArray());
    assertThat(norm.fusedF64(base, 0)).as("w = 0 leaves the base").containsExactly(base);
    assertThatThrownBy(norm::deltaF64)
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'transformer.transformer_blocks.0.attn.norm_k' is a replacement: it has no update ΔW, its tensor"
            + " takes the base weight's place");
    assertThatThrownBy(() -> LoraModule.replacement(key("transformer_blocks.0.attn.norm_k"), values(128, 0.5)).down())
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'transformer.transformer_blocks.0.attn.norm_k' is a replacement: it has no LoRA factors");
  }
}

package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

class DiffusersNamesTest {
  @Test
  void readsUnetNames() {
    assertThat(DiffusersNames.toPath("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"))
        .contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0");
    assertThat(DiffusersNames.toPath("mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"))
        .contains("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj");
    assertThat(DiffusersNames.toPath("up_blocks_1_resnets_2_conv_shortcut")).contains("up_blocks.1.resnets.2.conv_shortcut");
    assertThat(DiffusersNames.toPath("up_blocks_1_resnets_2_time_emb_proj")).contains("up_blocks.1.resnets.2.time_emb_proj");
    assertThat(DiffusersNames.toPath("down_blocks_0_attentions_1_proj_in")).contains("down_blocks.0.attentions.1.proj_in");
    assertThat(DiffusersNames.toPath("down_blocks_2_downsamplers_0_conv")).contains("down_blocks.2.downsamplers.0.conv");
    assertThat(DiffusersNames.toPath("time_embedding_linear_1")).contains("time_embedding.linear_1");
  }

  @Test
  void readsTextEncoderNames() {
    assertThat(DiffusersNames.toPath("text_model_encoder_layers_11_self_attn_out_proj"))
        .contains("text_model.encoder.layers.11.self_attn.out_proj");
    assertThat(DiffusersNames.toPath("text_model_encoder_layers_0_mlp_fc2")).contains("text_model.encoder.layers.0.mlp.fc2");
  }

  @Test
  void refusesWhatTheGrammarDoesNotKnow() {
    assertThat(DiffusersNames.toPath("input_blocks_4_1_transformer_blocks_0_attn1_to_q"))
        .as("original (sgm) names need an architecture descriptor")
        .isEmpty();
    assertThat(DiffusersNames.toPath("down_blocks_0_attentions_0_my_custom_layer")).isEmpty();
    assertThat(DiffusersNames.toPath("down_blocks__0")).isEmpty();
  }
}

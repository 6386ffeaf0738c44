package dev.loramerge.arch;

import static org.assertj.core.api.Assertions.assertThat;

import dev.loramerge.Component;
import dev.loramerge.ModuleKey;
import java.util.Arrays;
import java.util.Optional;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * SD3.5 Medium and Large, generated from their {@code transformer/config.json}: shapes as in
 * {@code sd3.5_medium.safetensors} / {@code sd3.5_large.safetensors} under the original MMDiT
 * names that diffusers' {@code convert_sd3_to_diffusers.py} maps, and kohya's {@code
 * networks/lora_sd3.py} names ({@code lora_unet_} plus the underscored original path).
 */
class Sd3ArchitectureTest {
  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  @ParameterizedTest
  @CsvSource({
    "sd35-medium, pos_embed.proj,                             1536 16 2 2, x_embedder.proj,",
    "sd35-medium, context_embedder,                           1536 4096,   context_embedder,",
    "sd35-medium, time_text_embed.text_embedder.linear_1,     1536 2048,   y_embedder.mlp.0,",
    "sd35-medium, transformer_blocks.0.norm1.linear,          13824 1536,  joint_blocks.0.x_block.adaLN_modulation.1, joint_blocks.0",
    "sd35-medium, transformer_blocks.12.attn2.to_out.0,       1536 1536,   joint_blocks.12.x_block.attn2.proj,         joint_blocks.12",
    "sd35-medium, transformer_blocks.13.norm1.linear,         9216 1536,   joint_blocks.13.x_block.adaLN_modulation.1, joint_blocks.13",
    "sd35-medium, transformer_blocks.22.attn.to_add_out,      1536 1536,   joint_blocks.22.context_block.attn.proj,    joint_blocks.22",
    "sd35-medium, transformer_blocks.23.ff.net.0.proj,        6144 1536,   joint_blocks.23.x_block.mlp.fc1,            joint_blocks.23",
    "sd35-medium, proj_out,                                   64 1536,     final_layer.linear,",
    "sd35-large,  transformer_blocks.37.ff.net.2,             2432 9728,   joint_blocks.37.x_block.mlp.fc2,            joint_blocks.37",
    "sd35-large,  transformer_blocks.0.norm1_context.linear,  14592 2432,  joint_blocks.0.context_block.adaLN_modulation.1, joint_blocks.0",
  })
  void modulesHaveTheirShapeOriginalNameAndBlock(String id, String path, String shape, String original, String block) {
    Architecture architecture = Architecture.byId(id).orElseThrow();
    ModuleSpec spec = architecture.module(key(path)).orElseThrow();
    assertThat(spec.weightShape()).as(path).containsExactly(Arrays.stream(shape.split(" ")).mapToLong(Long::parseLong).toArray());
    assertThat(spec.originalPath()).as(path).contains(original);
    assertThat(spec.blockId()).as(path).isEqualTo(Optional.ofNullable(block));
    assertThat(architecture.resolveKohyaName("lora_unet_" + original.replace('.', '_'))).contains(spec.key());
  }

  @ParameterizedTest
  @CsvSource({
    "sd35-medium, joint_blocks.0.x_block.attn.qkv,               4608 1536",
    "sd35-medium, joint_blocks.12.x_block.attn2.qkv,             4608 1536",
    "sd35-medium, joint_blocks.23.context_block.attn.qkv,        4608 1536",
    "sd35-medium, joint_blocks.23.context_block.adaLN_modulation.1, 3072 1536",
    "sd35-large,  joint_blocks.37.x_block.attn.qkv,              7296 2432",
    "sd35-large,  final_layer.adaLN_modulation.1,                4864 2432",
  })
  void fusedWeightsHaveTheCheckpointsShape(String id, String original, String shape) {
    Architecture architecture = Architecture.byId(id).orElseThrow();
    FusedModule module = architecture.fusedModules().get(original);
    assertThat(module).as(original).isNotNull();
    assertThat(module.weightShape()).containsExactly(Arrays.stream(shape.split(" ")).mapToLong(Long::parseLong).toArray());
    assertThat(architecture.resolveFusedKohyaName("lora_unet_" + original.replace('.', '_'))).containsSame(module);
  }

  @ParameterizedTest
  @CsvSource({
    "sd35-medium, transformer_blocks.13.attn2.to_q",
    "sd35-medium, transformer_blocks.23.attn.to_add_out",
    "sd35-medium, transformer_blocks.23.ff_context.net.0.proj",
    "sd35-large,  transformer_blocks.0.attn2.to_q",
  })
  void modulesTheModelDoesNotBuildAreAbsent(String id, String path) {
    assertThat(Architecture.byId(id).orElseThrow().module(key(path))).isEmpty();
  }
}

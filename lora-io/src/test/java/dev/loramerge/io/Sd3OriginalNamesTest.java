package dev.loramerge.io;

import static dev.loramerge.io.TestTensors.bf16;
import static dev.loramerge.io.TestTensors.gaussian;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SD3.5 LoRAs and bases in Stability's original MMDiT names ({@code sd3.5_medium.safetensors},
 * {@code sd3.5_large.safetensors}), built in code with the real names and shapes (Medium: 24 joint
 * blocks 1536 wide, {@code attn2} in blocks 0–12; Large: 38 blocks 2432 wide), read, converted,
 * merged and fused.
 *
 * <p>Where the names come from:
 *
 * <ul>
 *   <li>diffusers' {@code scripts/convert_sd3_to_diffusers.py} and ComfyUI's {@code comfy/utils.py}
 *       ({@code MMDIT_MAP_BASIC}, {@code MMDIT_MAP_BLOCK}, {@code mmdit_to_diffusers}): {@code
 *       joint_blocks.N.x_block.attn.qkv} is {@code transformer_blocks.N.attn.to_q/to_k/to_v} stacked
 *       by rows, {@code context_block.attn.qkv} is {@code add_q/k/v_proj}, {@code x_block.attn.proj}
 *       is {@code attn.to_out.0}, {@code x_block.mlp.fc1/fc2} {@code ff.net.0.proj/ff.net.2}, {@code
 *       x_block.adaLN_modulation.1} {@code norm1.linear}, {@code x_embedder.proj} {@code
 *       pos_embed.proj}, {@code t_embedder.mlp.0/2} and {@code y_embedder.mlp.0/2} {@code
 *       time_text_embed.timestep_embedder/text_embedder.linear_1/2}, {@code final_layer.linear}
 *       {@code proj_out}; {@code final_layer.adaLN_modulation.1} and the last block's {@code
 *       context_block.adaLN_modulation.1} are {@code norm_out.linear} and {@code
 *       norm1_context.linear} with their halves swapped ({@code swap_scale_shift});
 *   <li>ComfyUI's {@code comfy/lora.py} ({@code model_lora_keys_unet}) reads a LoRA keyed by the
 *       model's own names under {@code diffusion_model.} ("generic lora format"), with {@code
 *       .lora_up/.lora_down/.alpha} or {@code .lora_A/.lora_B}; single-file checkpoints hold the
 *       weights under {@code model.diffusion_model.}.
 * </ul>
 */
class Sd3OriginalNamesTest {
  private static final long MEDIUM = 1536;
  private static final long LARGE = 2432;
  private static final int RANK = 4;

  @TempDir Path folder;

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  /** A ComfyUI-keyed module: {@code .lora_down/.lora_up/.alpha} (kohya style) or {@code .lora_A/.lora_B}. */
  private static void module(Map<String, TensorData> tensors, Random random, String name, long in, long out, boolean peftStyle) {
    if (peftStyle) {
      tensors.put(name + ".lora_A.weight", gaussian(random, DType.BF16, RANK, in));
      tensors.put(name + ".lora_B.weight", gaussian(random, DType.BF16, out, RANK));
    } else {
      tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {8}, DType.F32));
      tensors.put(name + ".lora_down.weight", gaussian(random, DType.BF16, RANK, in));
      tensors.put(name + ".lora_up.weight", gaussian(random, DType.BF16, out, RANK));
    }
  }

  /**
   * An SD3.5 Medium LoRA as ComfyUI keys it: fused projections, an {@code attn2} of block 3, the
   * swapped modulations, the patch-embedding convolution and the embedders.
   */
  private Path mediumComfyFile(String name, long seed) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String p = "diffusion_model.";
    module(tensors, random, p + "joint_blocks.0.x_block.attn.qkv", MEDIUM, 3 * MEDIUM, false);
    module(tensors, random, p + "joint_blocks.0.x_block.attn.proj", MEDIUM, MEDIUM, false);
    module(tensors, random, p + "joint_blocks.0.x_block.mlp.fc1", MEDIUM, 4 * MEDIUM, false);
    module(tensors, random, p + "joint_blocks.0.context_block.attn.qkv", MEDIUM, 3 * MEDIUM, false);
    module(tensors, random, p + "joint_blocks.3.x_block.attn2.qkv", MEDIUM, 3 * MEDIUM, false);
    module(tensors, random, p + "joint_blocks.3.x_block.attn2.proj", MEDIUM, MEDIUM, false);
    module(tensors, random, p + "joint_blocks.23.context_block.adaLN_modulation.1", MEDIUM, 2 * MEDIUM, false);
    module(tensors, random, p + "final_layer.adaLN_modulation.1", MEDIUM, 2 * MEDIUM, false);
    module(tensors, random, p + "final_layer.linear", MEDIUM, 64, false);
    module(tensors, random, p + "context_embedder", 4096, MEDIUM, false);
    module(tensors, random, p + "t_embedder.mlp.0", 256, MEDIUM, false);
    module(tensors, random, p + "y_embedder.mlp.2", MEDIUM, MEDIUM, false);
    tensors.put(p + "x_embedder.proj.alpha", TensorData.ofDoubles(new double[] {8}, DType.F32));
    tensors.put(p + "x_embedder.proj.lora_down.weight", gaussian(random, DType.BF16, RANK, 16, 2, 2));
    tensors.put(p + "x_embedder.proj.lora_up.weight", gaussian(random, DType.BF16, MEDIUM, RANK, 1, 1));
    Path path = folder.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    return path;
  }

  @Test
  void comfyUiMediumKeysReadAsTheirDiffusersModules() throws IOException {
    Path path = mediumComfyFile("medium", 1);
    assertThat(LoraFiles.detect(path)).isEqualTo(LoraFormat.COMFYUI);
    LoraAdapter adapter = LoraFiles.read(path);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd35Medium());
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(
        key("transformer_blocks.0.attn.to_q"), key("transformer_blocks.0.attn.to_k"), key("transformer_blocks.0.attn.to_v"),
        key("transformer_blocks.0.attn.to_out.0"), key("transformer_blocks.0.ff.net.0.proj"),
        key("transformer_blocks.0.attn.add_q_proj"), key("transformer_blocks.0.attn.add_k_proj"),
        key("transformer_blocks.0.attn.add_v_proj"), key("transformer_blocks.3.attn2.to_q"),
        key("transformer_blocks.3.attn2.to_k"), key("transformer_blocks.3.attn2.to_v"),
        key("transformer_blocks.3.attn2.to_out.0"), key("transformer_blocks.23.norm1_context.linear"),
        key("norm_out.linear"), key("proj_out"), key("context_embedder"),
        key("time_text_embed.timestep_embedder.linear_1"), key("time_text_embed.text_embedder.linear_2"),
        key("pos_embed.proj"));
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      TensorData qkvUp = file.tensor("diffusion_model.joint_blocks.0.x_block.attn.qkv.lora_up.weight");
      TensorData qkvDown = file.tensor("diffusion_model.joint_blocks.0.x_block.attn.qkv.lora_down.weight");
      LoraModule k = adapter.module(key("transformer_blocks.0.attn.to_k")).orElseThrow();
      assertThat(k.down()).isEqualTo(qkvDown);
      assertThat(k.up().bytes()).as("to_k is rows 1536…3071 of qkv's up").isEqualTo(rows(qkvUp, MEDIUM, MEDIUM));
      assertThat(k.scale()).isEqualTo(2.0);
      // final_layer.adaLN_modulation.1 is (shift, scale); norm_out.linear is (scale, shift).
      TensorData finalUp = file.tensor("diffusion_model.final_layer.adaLN_modulation.1.lora_up.weight");
      LoraModule normOut = adapter.module(key("norm_out.linear")).orElseThrow();
      assertThat(rows(normOut.up(), 0, MEDIUM)).isEqualTo(rows(finalUp, MEDIUM, MEDIUM));
      assertThat(rows(normOut.up(), MEDIUM, MEDIUM)).isEqualTo(rows(finalUp, 0, MEDIUM));
      TensorData contextUp = file.tensor("diffusion_model.joint_blocks.23.context_block.adaLN_modulation.1.lora_up.weight");
      LoraModule lastContext = adapter.module(key("transformer_blocks.23.norm1_context.linear")).orElseThrow();
      assertThat(rows(lastContext.up(), 0, MEDIUM)).isEqualTo(rows(contextUp, MEDIUM, MEDIUM));
      assertThat(adapter.module(key("pos_embed.proj")).orElseThrow().weightShape()).containsExactly(MEDIUM, 16, 2, 2);
    }
  }

  /**
   * ComfyUI keys a text encoder's LoRA under {@code text_encoders.<name>.transformer.} plus the
   * model's state-dict names (comfy/lora.py, {@code model_lora_keys_clip}: clip_l, clip_g, t5xxl):
   * with SD3.5's transformer, CLIP-G is its second text encoder and T5 its third.
   */
  @Test
  void comfyUiClipGAndT5KeysReadAsSd35sTextEncoders() throws IOException {
    Random random = new Random(5);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    module(tensors, random, "diffusion_model.joint_blocks.0.x_block.attn.proj", MEDIUM, MEDIUM, false);
    module(tensors, random, "diffusion_model.joint_blocks.3.x_block.attn2.proj", MEDIUM, MEDIUM, false);
    String clipG = "text_encoders.clip_g.transformer.text_model.encoder.layers.2.self_attn.q_proj";
    String t5 = "text_encoders.t5xxl.transformer.encoder.block.5.layer.1.DenseReluDense.wi_0";
    module(tensors, random, clipG, 1280, 1280, false);
    module(tensors, random, t5, 4096, 10240, true);
    Path path = folder.resolve("comfy-text-encoders.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(path);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd35Medium());
    ModuleKey g = ModuleKey.of(Component.TEXT_ENCODER_2, "text_model.encoder.layers.2.self_attn.q_proj");
    ModuleKey wi0 = ModuleKey.of(Component.TEXT_ENCODER_3, "encoder.block.5.layer.1.DenseReluDense.wi_0");
    assertThat(adapter.module(g).orElseThrow().up()).as("CLIP-G's q_proj").isEqualTo(tensors.get(clipG + ".lora_up.weight"));
    assertThat(adapter.module(wi0).orElseThrow().up()).as("T5's wi_0").isEqualTo(tensors.get(t5 + ".lora_B.weight"));
  }

  @Test
  void largeKeysWithTheLoraABPrefixAndModelPrefixReadAsSd35Large() throws IOException {
    // Blocks 0–23 are named alike in Medium and Large: the widths say Large.
    Random random = new Random(2);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    module(tensors, random, "model.diffusion_model.joint_blocks.3.x_block.attn.qkv", LARGE, 3 * LARGE, true);
    module(tensors, random, "model.diffusion_model.joint_blocks.3.x_block.mlp.fc2", 4 * LARGE, LARGE, true);
    module(tensors, random, "model.diffusion_model.final_layer.linear", LARGE, 64, true);
    Path path = folder.resolve("large.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(path);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd35Large());
    assertThat(adapter.module(key("transformer_blocks.3.attn.to_v")).orElseThrow().scale())
        .as("no alpha: alpha = rank").isEqualTo(1.0);
    assertThat(adapter.module(key("transformer_blocks.3.ff.net.2")).orElseThrow().weightShape())
        .containsExactly(LARGE, 4 * LARGE);

    // And the kohya layout of the same modules: the fused qkv of block 3 is Large's, not Medium's.
    Path kohya = folder.resolve("large-kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      assertThat(file.tensor("lora_unet_joint_blocks_3_x_block_attn_qkv.lora_up.weight"))
          .isEqualTo(tensors.get("model.diffusion_model.joint_blocks.3.x_block.attn.qkv.lora_B.weight"));
    }
    assertThat(Architecture.detect(LoraFiles.read(kohya))).contains(Architecture.sd35Large());
  }

  @Test
  void convertsToKohyaWithTheSameTensorsAndToDiffusersWithTheSameUpdates() throws IOException {
    Path comfy = mediumComfyFile("convert", 3);
    LoraAdapter adapter = LoraFiles.read(comfy);
    Path kohya = folder.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile original = SafetensorsFile.open(comfy);
        SafetensorsFile converted = SafetensorsFile.open(kohya)) {
      for (var spec : original.tensors()) {
        // sd-scripts' networks/lora_sd3.py: lora_unet_ plus the underscored MMDiT path.
        String path = spec.name().substring("diffusion_model.".length());
        int suffix = path.contains(".lora_") ? path.indexOf(".lora_") : path.indexOf(".alpha");
        String name = "lora_unet_" + path.substring(0, suffix).replace('.', '_') + path.substring(suffix);
        if (name.endsWith(".alpha")) {
          assertThat(converted.tensor(name).getDouble(0)).as(name).isEqualTo(8.0);
        } else {
          assertThat(converted.tensor(name)).as(name).isEqualTo(original.tensor(spec.name()));
        }
      }
      assertThat(converted.tensors()).hasSize(original.tensors().size());
    }
    Path diffusers = folder.resolve("diffusers.safetensors");
    LoraFiles.write(adapter, diffusers, LoraFormat.DIFFUSERS);
    LoraAdapter back = LoraFiles.read(diffusers);
    assertThat(back.modules().keySet()).isEqualTo(adapter.modules().keySet());
    for (LoraModule module : adapter.modules().values()) {
      LoraModule read = back.module(module.key()).orElseThrow();
      assertThat(read.up()).as("%s up", module.key()).isEqualTo(module.up());
      assertThat(read.down()).as("%s down", module.key()).isEqualTo(module.down());
      assertThat(read.scale()).as("%s scale", module.key()).isEqualTo(module.scale());
    }
  }

  @Test
  void mergesAComfyUiAndADiffusersSd35LoraExactly() throws IOException {
    LoraAdapter comfy = LoraFiles.read(mediumComfyFile("comfy", 4));
    Random random = new Random(5);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String path : new String[] {"transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.add_v_proj", "norm_out.linear"}) {
      long out = path.equals("norm_out.linear") ? 2 * MEDIUM : MEDIUM;
      tensors.put("transformer." + path + ".lora_A.weight", gaussian(random, DType.BF16, 2, MEDIUM));
      tensors.put("transformer." + path + ".lora_B.weight", gaussian(random, DType.BF16, out, 2));
    }
    Path diffusersPath = folder.resolve("diffusers-sd35.safetensors");
    Safetensors.write(diffusersPath, tensors, ImmutableMap.of());
    LoraAdapter diffusers = LoraFiles.read(diffusersPath);
    LoraAdapter merged = LoraMerger.builder().add(comfy, 0.75).add(diffusers, -0.5).dtype(DType.F64).build().merge();
    Path out = folder.resolve("merged.safetensors");
    LoraFiles.write(merged, out, LoraFormat.KOHYA);
    LoraAdapter back = LoraFiles.read(out);
    assertThat(back.modules().keySet()).isEqualTo(comfy.modules().keySet());
    for (ModuleKey key : new ModuleKey[] {
        key("transformer_blocks.0.attn.to_k"), key("transformer_blocks.0.attn.add_v_proj"), key("norm_out.linear"),
        key("transformer_blocks.0.attn.to_q"), key("pos_embed.proj")}) {
      LoraModule module = back.module(key).orElseThrow();
      for (long row : new long[] {0, 1, module.outFeatures() / 2 + 3, module.outFeatures() - 1}) {
        double[] expected = new double[Math.toIntExact(module.inFeatures())];
        add(expected, comfy, key, row, 0.75);
        add(expected, diffusers, key, row, -0.5);
        double[] actual = row(module, row);
        for (int i = 0; i < expected.length; i++) {
          assertThat(Math.abs(actual[i] - expected[i])).as("%s row %d element %d", key, row, i).isLessThanOrEqualTo(1e-12);
        }
      }
    }
  }

  @Test
  void fusesIntoAnOriginalNamedBaseWithTheBytesOfTheDiffusersNamedOne() throws IOException {
    Random random = new Random(6);
    TensorData q = gaussian(random, DType.BF16, MEDIUM, MEDIUM);
    TensorData k = gaussian(random, DType.BF16, MEDIUM, MEDIUM);
    TensorData v = gaussian(random, DType.BF16, MEDIUM, MEDIUM);
    TensorData normOut = gaussian(random, DType.BF16, 2 * MEDIUM, MEDIUM);
    TensorData lastContext = gaussian(random, DType.BF16, 2 * MEDIUM, MEDIUM);
    TensorData patch = gaussian(random, DType.BF16, MEDIUM, 16, 2, 2);
    TensorData proj = gaussian(random, DType.BF16, MEDIUM, MEDIUM);
    String m = "model.diffusion_model.";
    Path original = folder.resolve("sd3.5_medium.safetensors");
    Safetensors.write(original, ImmutableMap.of(
        m + "joint_blocks.0.x_block.attn.qkv.weight", stack(q, k, v),
        m + "joint_blocks.0.x_block.attn.proj.weight", proj,
        m + "final_layer.adaLN_modulation.1.weight", swapped(normOut),
        m + "joint_blocks.23.context_block.adaLN_modulation.1.weight", swapped(lastContext),
        m + "x_embedder.proj.weight", patch), ImmutableMap.of());
    Path diffusersBase = folder.resolve("transformer.safetensors");
    Safetensors.write(diffusersBase, ImmutableMap.of(
        "transformer_blocks.0.attn.to_q.weight", q, "transformer_blocks.0.attn.to_k.weight", k,
        "transformer_blocks.0.attn.to_v.weight", v, "transformer_blocks.0.attn.to_out.0.weight", proj,
        "norm_out.linear.weight", normOut, "transformer_blocks.23.norm1_context.linear.weight", lastContext,
        "pos_embed.proj.weight", patch), ImmutableMap.of());

    // A diffusers LoRA (its own A per part) and a ComfyUI one (A shared by q, k, v), at weights and
    // a scale that are not powers of two: float64 sums are inexact, and only the same sums in the
    // same order give the same bytes at the rare values that lie on a bf16 tie.
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String path : new String[] {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v", "norm_out.linear"}) {
      long out = path.equals("norm_out.linear") ? 2 * MEDIUM : MEDIUM;
      tensors.put("transformer." + path + ".lora_A.weight", gaussian(random, DType.BF16, 2, MEDIUM));
      tensors.put("transformer." + path + ".lora_B.weight", gaussian(random, DType.BF16, out, 2));
    }
    Path diffusersLora = folder.resolve("style.safetensors");
    Safetensors.write(diffusersLora, tensors, ImmutableMap.of());
    LoraAdapter style = LoraFiles.read(diffusersLora);
    LoraAdapter comfy = LoraFiles.read(mediumComfyFile("subject", 7));
    LoraAdapter.Builder kept = comfy.toBuilder();
    for (ModuleKey key : comfy.modules().keySet()) {
      if (!key.path().startsWith("transformer_blocks.0.attn.to_") && !key.path().equals("norm_out.linear")
          && !key.path().equals("transformer_blocks.23.norm1_context.linear") && !key.path().equals("pos_embed.proj")) {
        kept.remove(key);
      }
    }
    LoraAdapter subject = kept.build();
    LoraFuser fuser = LoraFuser.builder().merger(LoraMerger.builder().add(style, 0.8).add(subject, 0.6).build()).scale(0.9).build();
    Path fusedOriginal = folder.resolve("fused-original.safetensors");
    Path fusedDiffusers = folder.resolve("fused-diffusers.safetensors");
    var report = fuser.fuseInto(SafetensorsWeights.of(original, fusedOriginal)).report();
    assertThat(report.matched())
        .containsEntry(key("transformer_blocks.0.attn.to_k"), m + "joint_blocks.0.x_block.attn.qkv.weight")
        .containsEntry(key("norm_out.linear"), m + "final_layer.adaLN_modulation.1.weight")
        .containsEntry(key("pos_embed.proj"), m + "x_embedder.proj.weight");
    assertThat(report.unmatched()).isEmpty();
    fuser.fuseInto(SafetensorsWeights.of(diffusersBase, fusedDiffusers));

    try (SafetensorsFile a = SafetensorsFile.open(fusedOriginal);
        SafetensorsFile b = SafetensorsFile.open(fusedDiffusers)) {
      assertThat(a.tensor(m + "joint_blocks.0.x_block.attn.qkv.weight")).isEqualTo(stack(
          b.tensor("transformer_blocks.0.attn.to_q.weight"), b.tensor("transformer_blocks.0.attn.to_k.weight"),
          b.tensor("transformer_blocks.0.attn.to_v.weight")));
      assertThat(a.tensor(m + "final_layer.adaLN_modulation.1.weight")).isEqualTo(swapped(b.tensor("norm_out.linear.weight")));
      assertThat(a.tensor(m + "joint_blocks.23.context_block.adaLN_modulation.1.weight"))
          .isEqualTo(swapped(b.tensor("transformer_blocks.23.norm1_context.linear.weight")));
      assertThat(a.tensor(m + "x_embedder.proj.weight")).isEqualTo(b.tensor("pos_embed.proj.weight"));
      assertThat(a.tensor(m + "joint_blocks.0.x_block.attn.proj.weight"))
          .isEqualTo(b.tensor("transformer_blocks.0.attn.to_out.0.weight"));
      assertThat(a.tensor(m + "joint_blocks.0.x_block.attn.proj.weight")).isNotEqualTo(proj);

      // Independently: W + 0.9·(0.8·ΔW_style + 0.6·ΔW_subject) in float64, rounded once to bf16,
      // for elements of norm_out.linear's scale half, which lies in the original's second half.
      TensorData fusedFinal = a.tensor(m + "final_layer.adaLN_modulation.1.weight");
      for (long element : new long[] {0, 1, MEDIUM * 700 + 5, MEDIUM * MEDIUM - 1}) {
        long row = element / MEDIUM;
        int column = (int) (element % MEDIUM);
        double[] delta = new double[(int) MEDIUM];
        add(delta, style, key("norm_out.linear"), row, 0.8);
        add(delta, subject, key("norm_out.linear"), row, 0.6);
        double exact = normOut.getDouble(element) + 0.9 * delta[column];
        assertThat(fusedFinal.getDouble(MEDIUM * MEDIUM + element)).as("norm_out element %d", element).isEqualTo(bf16(exact));
      }
    }
  }

  @Test
  void aModuleOfTheWrongWidthIsRefusedNamingItAndTheArchitecture() throws IOException {
    Random random = new Random(8);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    module(tensors, random, "diffusion_model.joint_blocks.0.x_block.attn.proj", MEDIUM, MEDIUM, false);
    module(tensors, random, "diffusion_model.joint_blocks.0.x_block.mlp.fc2", MEDIUM, MEDIUM, false);
    Path path = folder.resolve("wrong.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    assertThatThrownBy(() -> LoraFiles.read(path))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("wrong.safetensors: module 'diffusion_model.joint_blocks.0.x_block.mlp.fc2' updates a [1536, 1536]"
            + " weight, but SD3.5 Medium's 'joint_blocks.0.x_block.mlp.fc2' is [1536, 6144]");
  }

  @Test
  void bareNamesReadAsComfyUiAndAnotherArchitectureGivenIsRefused() throws IOException {
    Random random = new Random(9);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    module(tensors, random, "joint_blocks.5.context_block.attn.qkv", MEDIUM, 3 * MEDIUM, false);
    module(tensors, random, "final_layer.linear", MEDIUM, 64, false);
    Path path = folder.resolve("bare.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    assertThat(LoraFiles.detect(path)).isEqualTo(LoraFormat.COMFYUI);
    LoraAdapter adapter = LoraFiles.read(path);
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(key("transformer_blocks.5.attn.add_q_proj"),
        key("transformer_blocks.5.attn.add_k_proj"), key("transformer_blocks.5.attn.add_v_proj"), key("proj_out"));
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd35Medium());
    LoraReadOptions sdxl = LoraReadOptions.builder().architecture(Architecture.sdxl()).build();
    assertThatThrownBy(() -> LoraFiles.read(path, sdxl))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("bare.safetensors: a LoRA in comfyui layout, which names modules of Flux.1 or SD3.5 Medium or SD3.5 Large,"
            + " but the architecture given is SDXL");
  }

  private static TensorData stack(TensorData... parts) {
    long rows = 0;
    int size = 0;
    for (TensorData part : parts) {
      rows += part.dim(0);
      size += (int) part.byteSize();
    }
    ByteBuffer bytes = ByteBuffer.allocate(size);
    for (TensorData part : parts) {
      bytes.put(part.bytes());
    }
    return TensorData.of(parts[0].dtype(), new long[] {rows, parts[0].dim(1)}, bytes.flip());
  }

  /** The two row halves of {@code weight} in the other order: the original's (shift, scale) against diffusers' (scale, shift). */
  private static TensorData swapped(TensorData weight) {
    long half = weight.dim(0) / 2;
    ByteBuffer bytes = ByteBuffer.allocate((int) weight.byteSize());
    bytes.put(rows(weight, half, half)).put(rows(weight, 0, half));
    return TensorData.of(weight.dtype(), weight.shape(), bytes.flip());
  }

  /** Rows {@code [from, from + count)} of a 2-D tensor's bytes. */
  private static ByteBuffer rows(TensorData tensor, long from, long count) {
    long rowBytes = tensor.byteSize() / tensor.dim(0);
    return tensor.bytes().position((int) (from * rowBytes)).limit((int) ((from + count) * rowBytes)).slice();
  }

  private static void add(double[] sum, LoraAdapter adapter, ModuleKey key, long row, double weight) {
    adapter.module(key).ifPresent(module -> {
      double[] delta = row(module, row);
      for (int i = 0; i < sum.length; i++) {
        sum[i] += weight * delta[i];
      }
    });
  }

  /** Row {@code row} of s·B·A in float64, from the factors' values (A flattened to r × in·k·k). */
  private static double[] row(LoraModule module, long row) {
    int rank = module.rank();
    double[] a = module.down().toDoubleArray();
    int in = a.length / rank;
    double[] b = new double[rank];
    module.up().readDoubles(Math.toIntExact(row * rank), b, rank);
    double[] result = new double[in];
    for (int p = 0; p < rank; p++) {
      double factor = module.scale() * b[p];
      for (int i = 0; i < in; i++) {
        result[i] += factor * a[p * in + i];
      }
    }
    return result;
  }
}

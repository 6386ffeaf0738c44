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
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Flux.1 LoRAs in the layouts trainers write, built in code with their real tensor names and
 * shapes, read, converted, merged and fused.
 *
 * <ul>
 *   <li>kohya (sd-scripts {@code networks/lora_flux.py}, FluxGym): {@code
 *       lora_unet_double_blocks_N_img_attn_qkv.lora_down.weight}, {@code .lora_up.weight}, {@code
 *       .alpha}, over BFL's module names, fused projections included (diffusers reads them with
 *       {@code _convert_kohya_flux_lora_to_diffusers}, which splits a fused up by rows and keeps
 *       the down for every part);
 *   <li>diffusers / PEFT ({@code FluxPipeline.save_lora_weights}, ai-toolkit): {@code
 *       transformer.transformer_blocks.N.attn.to_q.lora_A.weight} / {@code lora_B}, alphas in
 *       {@code lora_adapter_metadata} or as {@code .alpha} tensors, or none (ai-toolkit: scale 1).
 * </ul>
 */
class FluxLayoutsTest {
  private static final long INNER = 3072;
  private static final long MLP = 4 * INNER;

  @TempDir Path folder;

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.TRANSFORMER, path);
  }

  /** A kohya Flux file: fused and plain modules of double block 0 and single block 0, rank 4. */
  private Path kohyaFile(String name, long seed) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_unet_double_blocks_0_img_attn_qkv", INNER, 3 * INNER);
    kohyaModule(tensors, random, "lora_unet_double_blocks_0_img_attn_proj", INNER, INNER);
    kohyaModule(tensors, random, "lora_unet_double_blocks_0_txt_mlp_0", INNER, MLP);
    kohyaModule(tensors, random, "lora_unet_single_blocks_0_linear1", INNER, 3 * INNER + MLP);
    kohyaModule(tensors, random, "lora_unet_single_blocks_0_linear2", INNER + MLP, INNER);
    Path path = folder.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of("ss_network_module", "networks.lora_flux", "ss_network_dim", "4"));
    return path;
  }

  private static void kohyaModule(Map<String, TensorData> tensors, Random random, String name, long in, long out) {
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {8}, DType.BF16));
    tensors.put(name + ".lora_down.weight", gaussian(random, DType.BF16, 4, in));
    tensors.put(name + ".lora_up.weight", gaussian(random, DType.BF16, out, 4));
  }

  /** A diffusers / ai-toolkit Flux file with its own factors for each of q, k and v. */
  private Path diffusersFile(String name, long seed, boolean alphaTensors, boolean adapterMetadata) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (String path : new String[] {
        "transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
        "transformer_blocks.0.attn.to_out.0", "single_transformer_blocks.0.attn.to_q",
        "single_transformer_blocks.0.proj_mlp"}) {
      long out = path.endsWith("proj_mlp") ? MLP : INNER;
      tensors.put("transformer." + path + ".lora_A.weight", gaussian(random, DType.BF16, 2, INNER));
      tensors.put("transformer." + path + ".lora_B.weight", gaussian(random, DType.BF16, out, 2));
      if (alphaTensors) {
        tensors.put("transformer." + path + ".alpha", TensorData.ofDoubles(new double[] {1}, DType.F32));
      }
    }
    Map<String, String> metadata = new LinkedHashMap<>();
    if (adapterMetadata) {
      metadata.put("lora_adapter_metadata", "{\"transformer.r\": 2, \"transformer.lora_alpha\": 4, \"transformer.use_rslora\": false}");
    }
    Path path = folder.resolve(name + ".safetensors");
    Safetensors.write(path, tensors, metadata);
    return path;
  }

  @Test
  void kohyaFusedProjectionsReadAsTheirDiffusersPartsSharingDown() throws IOException {
    LoraAdapter adapter = LoraFiles.read(kohyaFile("kohya", 1));
    assertThat(Architecture.detect(adapter)).contains(Architecture.flux());
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(
        key("transformer_blocks.0.attn.to_q"), key("transformer_blocks.0.attn.to_k"), key("transformer_blocks.0.attn.to_v"),
        key("transformer_blocks.0.attn.to_out.0"), key("transformer_blocks.0.ff_context.net.0.proj"),
        key("single_transformer_blocks.0.attn.to_q"), key("single_transformer_blocks.0.attn.to_k"),
        key("single_transformer_blocks.0.attn.to_v"), key("single_transformer_blocks.0.proj_mlp"),
        key("single_transformer_blocks.0.proj_out"));
    LoraModule q = adapter.module(key("single_transformer_blocks.0.attn.to_q")).orElseThrow();
    LoraModule mlp = adapter.module(key("single_transformer_blocks.0.proj_mlp")).orElseThrow();
    assertThat(mlp.down()).isEqualTo(q.down());
    assertThat(mlp.weightShape()).containsExactly(MLP, INNER);
    assertThat(mlp.scale()).isEqualTo(2.0);
    try (SafetensorsFile file = SafetensorsFile.open(folder.resolve("kohya.safetensors"))) {
      TensorData up = file.tensor("lora_unet_single_blocks_0_linear1.lora_up.weight");
      // proj_mlp's up is rows 9216… of linear1's, bit for bit.
      java.nio.ByteBuffer rows = up.bytes().position((int) (3 * INNER * 4 * 2));
      assertThat(mlp.up().bytes()).isEqualTo(rows);
    }
  }

  @Test
  void kohyaToDiffusersAndBackGivesTheSameTensorsBitForBit() throws IOException {
    Path kohya = kohyaFile("kohya", 2);
    Path diffusers = folder.resolve("diffusers.safetensors");
    LoraFiles.write(LoraFiles.read(kohya), diffusers, LoraFormat.DIFFUSERS);
    assertThat(LoraFiles.detect(diffusers)).isEqualTo(LoraFormat.DIFFUSERS);
    Path back = folder.resolve("back.safetensors");
    LoraFiles.write(LoraFiles.read(diffusers), back, LoraFormat.KOHYA);
    try (SafetensorsFile original = SafetensorsFile.open(kohya);
        SafetensorsFile converted = SafetensorsFile.open(back)) {
      assertThat(converted.tensors()).extracting(spec -> spec.name())
          .containsExactlyInAnyOrderElementsOf(original.tensors().stream().map(spec -> spec.name()).toList());
      for (var spec : original.tensors()) {
        if (!spec.name().endsWith(".alpha")) {
          assertThat(converted.tensor(spec.name())).as(spec.name()).isEqualTo(original.tensor(spec.name()));
        } else {
          assertThat(converted.tensor(spec.name()).getDouble(0)).as(spec.name()).isEqualTo(8.0);
        }
      }
    }
  }

  @Test
  void diffusersPartsWithTheirOwnDownsJoinIntoOneKohyaModuleWithTheRanksAddedUp() throws IOException {
    LoraAdapter adapter = LoraFiles.read(diffusersFile("diffusers", 3, false, true));
    assertThat(adapter.module(key("transformer_blocks.0.attn.to_q")).orElseThrow().scale()).isEqualTo(2.0);
    Path kohya = folder.resolve("kohya.safetensors");
    LoraFiles.write(adapter, kohya, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(kohya)) {
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight").shape()).containsExactly(6, INNER);
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight").shape()).containsExactly(3 * INNER, 6);
      // single block 0 has q and proj_mlp only: k and v are zero rows of linear1.
      assertThat(file.tensor("lora_unet_single_blocks_0_linear1.lora_up.weight").shape()).containsExactly(3 * INNER + MLP, 4);
      assertThat(file.tensor("lora_unet_double_blocks_0_img_attn_proj.lora_up.weight").shape()).containsExactly(INNER, 2);
    }
    LoraAdapter back = LoraFiles.read(kohya);
    for (LoraModule module : adapter.modules().values()) {
      LoraModule read = back.module(module.key()).orElseThrow();
      for (long row : rows(module)) {
        assertThat(Arrays.equals(row(read, row), row(module, row))).as("%s row %d", module.key(), row).isTrue();
      }
    }
    LoraModule missing = back.module(key("single_transformer_blocks.0.attn.to_k")).orElseThrow();
    assertThat(missing.up().toDoubleArray()).containsOnly(0.0);
  }

  @Test
  void alphasComeFromAlphaTensorsOrAreTheRankWithout() throws IOException {
    LoraAdapter withAlpha = LoraFiles.read(diffusersFile("with-alpha", 4, true, false));
    assertThat(withAlpha.module(key("transformer_blocks.0.attn.to_k")).orElseThrow().scale()).isEqualTo(0.5);
    // ai-toolkit writes no alphas: diffusers then uses alpha = rank, scale 1.
    LoraAdapter aiToolkit = LoraFiles.read(diffusersFile("ai-toolkit", 4, false, false));
    assertThat(aiToolkit.module(key("transformer_blocks.0.attn.to_k")).orElseThrow().scale()).isEqualTo(1.0);
    assertThat(Architecture.detect(aiToolkit)).contains(Architecture.flux());
  }

  @Test
  void mergesAKohyaAndADiffusersFluxLoraExactly() throws IOException {
    LoraAdapter kohya = LoraFiles.read(kohyaFile("kohya", 5));
    LoraAdapter diffusers = LoraFiles.read(diffusersFile("diffusers", 6, false, true));
    LoraAdapter merged = LoraMerger.builder().add(kohya, 0.75).add(diffusers, -0.5).dtype(DType.F64).build().merge();
    Path out = folder.resolve("merged.safetensors");
    LoraFiles.write(merged, out, LoraFormat.KOHYA);
    LoraAdapter back = LoraFiles.read(out);
    assertThat(back.modules().keySet()).isEqualTo(merged.modules().keySet());
    for (ModuleKey key : merged.modules().keySet()) {
      LoraModule module = back.module(key).orElseThrow();
      for (long row : rows(module)) {
        double[] expected = new double[Math.toIntExact(module.inFeatures())];
        add(expected, kohya, key, row, 0.75);
        add(expected, diffusers, key, row, -0.5);
        double[] actual = row(module, row);
        for (int i = 0; i < expected.length; i++) {
          if (Math.abs(actual[i] - expected[i]) > 1e-12) {
            assertThat(actual[i]).as("%s row %d element %d", key, row, i).isEqualTo(expected[i]);
          }
        }
      }
    }
  }

  private static void add(double[] sum, LoraAdapter adapter, ModuleKey key, long row, double weight) {
    adapter.module(key).ifPresent(module -> {
      double[] delta = row(module, row);
      for (int i = 0; i < sum.length; i++) {
        sum[i] += weight * delta[i];
      }
    });
  }

  /** Rows checked in each module: the first, two inside, the last. */
  private static long[] rows(LoraModule module) {
    long out = module.outFeatures();
    return new long[] {0, 1, out / 2 + 3, out - 1};
  }

  /**
   * Row {@code row} of the update s·B·A in float64, from the factors' values (a whole Flux
   * update runs to hundreds of megabytes of doubles).
   */
  private static double[] row(LoraModule module, long row) {
    int rank = module.rank();
    int in = Math.toIntExact(module.inFeatures());
    double[] a = module.down().toDoubleArray();
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

  @Test
  void fusesIntoBflAndDiffusersNamedBasesWithTheSameBytes() throws IOException {
    Random random = new Random(7);
    TensorData q = gaussian(random, DType.BF16, INNER, INNER);
    TensorData k = gaussian(random, DType.BF16, INNER, INNER);
    TensorData v = gaussian(random, DType.BF16, INNER, INNER);
    TensorData proj = gaussian(random, DType.BF16, INNER, INNER);
    java.nio.ByteBuffer qkvBytes = java.nio.ByteBuffer.allocate((int) (3 * q.byteSize()));
    qkvBytes.put(q.bytes()).put(k.bytes()).put(v.bytes()).flip();
    TensorData qkv = TensorData.of(DType.BF16, new long[] {3 * INNER, INNER}, qkvBytes);
    Path bfl = folder.resolve("flux1-dev.safetensors");
    Safetensors.write(bfl, ImmutableMap.of(
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight", qkv,
        "model.diffusion_model.double_blocks.0.img_attn.proj.weight", proj), ImmutableMap.of());
    Path diffusers = folder.resolve("transformer.safetensors");
    Safetensors.write(diffusers, ImmutableMap.of(
        "transformer_blocks.0.attn.to_q.weight", q, "transformer_blocks.0.attn.to_k.weight", k,
        "transformer_blocks.0.attn.to_v.weight", v, "transformer_blocks.0.attn.to_out.0.weight", proj), ImmutableMap.of());

    LoraAdapter style = LoraFiles.read(diffusersFile("style", 8, false, true));
    LoraAdapter onlyBlock = style.toBuilder()
        .remove(key("single_transformer_blocks.0.attn.to_q")).remove(key("single_transformer_blocks.0.proj_mlp")).build();
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(onlyBlock, 0.8).build());
    Path fusedBfl = folder.resolve("fused-bfl.safetensors");
    Path fusedDiffusers = folder.resolve("fused-diffusers.safetensors");
    assertThat(fuser.fuseInto(SafetensorsWeights.of(bfl, fusedBfl)).report().matched())
        .containsEntry(key("transformer_blocks.0.attn.to_k"), "model.diffusion_model.double_blocks.0.img_attn.qkv.weight");
    fuser.fuseInto(SafetensorsWeights.of(diffusers, fusedDiffusers));

    try (SafetensorsFile a = SafetensorsFile.open(fusedBfl);
        SafetensorsFile b = SafetensorsFile.open(fusedDiffusers)) {
      java.nio.ByteBuffer fusedQkv = a.tensor("model.diffusion_model.double_blocks.0.img_attn.qkv.weight").bytes();
      java.nio.ByteBuffer parts = java.nio.ByteBuffer.allocate(fusedQkv.remaining());
      for (String part : new String[] {"to_q", "to_k", "to_v"}) {
        parts.put(b.tensor("transformer_blocks.0.attn." + part + ".weight").bytes());
      }
      assertThat(fusedQkv).isEqualTo(parts.flip());
      assertThat(a.tensor("model.diffusion_model.double_blocks.0.img_attn.proj.weight"))
          .isEqualTo(b.tensor("transformer_blocks.0.attn.to_out.0.weight"));
      // An independent check of a few rows of k: the float64 value W + 0.8·s·B·A rounded once to bf16.
      LoraModule loraK = onlyBlock.module(key("transformer_blocks.0.attn.to_k")).orElseThrow();
      TensorData fusedK = b.tensor("transformer_blocks.0.attn.to_k.weight");
      for (int element : new int[] {0, 1, 4097, 3072 * 1000 + 17, 3072 * 3071 + 3071}) {
        double exact = k.getDouble(element) + 0.8 * row(loraK, element / 3072)[element % 3072];
        assertThat(fusedK.getDouble(element)).as("k element %d", element).isEqualTo(bf16(exact));
        assertThat(a.tensor("model.diffusion_model.double_blocks.0.img_attn.qkv.weight").getDouble(3072L * 3072 + element))
            .isEqualTo(bf16(exact));
      }
    }
  }

  @Test
  void aFusedProjectionOfAnotherKindIsRefusedNamingTheModuleAndKind() throws IOException {
    Random random = new Random(11);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    String name = "lora_unet_double_blocks_0_img_attn_qkv";
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {2}, DType.F32));
    tensors.put(name + ".hada_w1_a", gaussian(random, DType.F32, 3 * INNER, 2));
    tensors.put(name + ".hada_w1_b", gaussian(random, DType.F32, 2, INNER));
    tensors.put(name + ".hada_w2_a", gaussian(random, DType.F32, 3 * INNER, 2));
    tensors.put(name + ".hada_w2_b", gaussian(random, DType.F32, 2, INNER));
    kohyaModule(tensors, random, "lora_unet_double_blocks_0_img_attn_proj", INNER, INNER);
    Path path = folder.resolve("loha-qkv.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    assertThatThrownBy(() -> LoraFiles.read(path))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining(name)
        .hasMessageContaining("LoHa")
        .hasMessageContaining("can be split into the fused weight's parts");
  }

  @Test
  void aPartOfAnotherKindIsNotFusedIntoAFusedWeight() throws IOException {
    Random random = new Random(12);
    Path bfl = folder.resolve("flux1-dev-qkv.safetensors");
    Safetensors.write(bfl, ImmutableMap.of(
        "double_blocks.0.img_attn.qkv.weight", gaussian(random, DType.BF16, 3 * INNER, INNER)), ImmutableMap.of());
    LoraModule lokr = LoraModule.ofKind(
        key("transformer_blocks.0.attn.to_k"), dev.loramerge.AdapterKind.LOKR,
        Map.of("lokr_w1", gaussian(random, DType.F32, 64, 64), "lokr_w2", gaussian(random, DType.F32, 48, 48)), 1,
        java.util.Optional.empty());
    LoraAdapter kinds = LoraAdapter.builder().name("kinds").add(lokr).build();
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(kinds, 1).build());
    assertThatThrownBy(() -> fuser.fuseInto(SafetensorsWeights.of(bfl, folder.resolve("out.safetensors"))))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("transformer_blocks.0.attn.to_k")
        .hasMessageContaining("LoKr")
        .hasMessageContaining("img_attn.qkv");
  }

  @Test
  void fusesIntoAnFp8FusedWeight() throws IOException {
    Random random = new Random(13);
    // Small finite e4m3 values (no NaN encodings), either sign.
    byte[] fp8Values = new byte[Math.toIntExact(3 * INNER * INNER)];
    for (int i = 0; i < fp8Values.length; i++) {
      fp8Values[i] = (byte) (random.nextInt(0x30) | (random.nextBoolean() ? 0x80 : 0));
    }
    java.nio.ByteBuffer fp8 = java.nio.ByteBuffer.wrap(fp8Values);
    Path bfl = folder.resolve("flux1-dev-fp8.safetensors");
    Safetensors.write(bfl, ImmutableMap.of(
        "double_blocks.0.img_attn.qkv.weight", TensorData.of(DType.F8_E4M3, new long[] {3 * INNER, INNER}, fp8)), ImmutableMap.of());
    LoraAdapter style = LoraFiles.read(diffusersFile("style-fp8", 8, false, true)).toBuilder()
        .remove(key("single_transformer_blocks.0.attn.to_q")).remove(key("single_transformer_blocks.0.proj_mlp"))
        .remove(key("transformer_blocks.0.attn.to_out.0")).build();
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(style, 0.8).build());
    Path out = folder.resolve("fused-fp8.safetensors");
    assertThat(fuser.fuseInto(SafetensorsWeights.of(bfl, out)).report().matched())
        .containsEntry(key("transformer_blocks.0.attn.to_q"), "double_blocks.0.img_attn.qkv.weight");
    try (SafetensorsFile file = SafetensorsFile.open(out)) {
      assertThat(file.tensor("double_blocks.0.img_attn.qkv.weight").dtype()).isEqualTo(DType.F8_E4M3);
    }
  }

  @Test
  void oneTrainerTransformerNamesReadAsTheDiffusersModules() throws IOException {
    // OneTrainer writes Flux as lora_transformer_ plus the underscored diffusers path.
    Random random = new Random(11);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("lora_transformer_single_transformer_blocks_3_proj_mlp.alpha", TensorData.ofDoubles(new double[] {16}, DType.F32));
    tensors.put("lora_transformer_single_transformer_blocks_3_proj_mlp.lora_down.weight", gaussian(random, DType.BF16, 8, INNER));
    tensors.put("lora_transformer_single_transformer_blocks_3_proj_mlp.lora_up.weight", gaussian(random, DType.BF16, MLP, 8));
    tensors.put("lora_transformer_transformer_blocks_0_attn_to_add_out.lora_down.weight", gaussian(random, DType.BF16, 8, INNER));
    tensors.put("lora_transformer_transformer_blocks_0_attn_to_add_out.lora_up.weight", gaussian(random, DType.BF16, INNER, 8));
    Path path = folder.resolve("onetrainer.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(path);
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(
        key("transformer_blocks.0.attn.to_add_out"), key("single_transformer_blocks.3.proj_mlp"));
    assertThat(adapter.module(key("single_transformer_blocks.3.proj_mlp")).orElseThrow().scale()).isEqualTo(2.0);
  }

  @Test
  void kohyaSd35LorasReadAsTheirDiffusersPartsOfTheRightSize() throws IOException {
    // sd-scripts' networks/lora_sd3.py: lora_unet_ plus the underscored MMDiT path, qkv fused.
    Random random = new Random(14);
    Map<String, TensorData> medium = new LinkedHashMap<>();
    kohyaModule(medium, random, "lora_unet_joint_blocks_3_x_block_attn2_qkv", 1536, 3 * 1536);
    kohyaModule(medium, random, "lora_unet_joint_blocks_3_context_block_mlp_fc2", 4 * 1536, 1536);
    Path mediumFile = folder.resolve("sd35m.safetensors");
    Safetensors.write(mediumFile, medium, ImmutableMap.of());
    LoraAdapter adapter = LoraFiles.read(mediumFile);
    assertThat(Architecture.detect(adapter)).contains(Architecture.sd35Medium());
    assertThat(adapter.modules().keySet()).containsExactlyInAnyOrder(
        key("transformer_blocks.3.attn2.to_q"), key("transformer_blocks.3.attn2.to_k"), key("transformer_blocks.3.attn2.to_v"),
        key("transformer_blocks.3.ff_context.net.2"));
    Map<String, TensorData> large = new LinkedHashMap<>();
    kohyaModule(large, random, "lora_unet_joint_blocks_30_x_block_attn_qkv", 2432, 3 * 2432);
    Path largeFile = folder.resolve("sd35l.safetensors");
    Safetensors.write(largeFile, large, ImmutableMap.of());
    LoraAdapter largeAdapter = LoraFiles.read(largeFile);
    assertThat(Architecture.detect(largeAdapter)).contains(Architecture.sd35Large());
    Path back = folder.resolve("back.safetensors");
    LoraFiles.write(largeAdapter, back, LoraFormat.KOHYA);
    try (SafetensorsFile file = SafetensorsFile.open(back)) {
      assertThat(file.tensor("lora_unet_joint_blocks_30_x_block_attn_qkv.lora_up.weight"))
          .isEqualTo(large.get("lora_unet_joint_blocks_30_x_block_attn_qkv.lora_up.weight"));
    }
  }

  @Test
  void skippingRefusesAResultThatLostMostOfTheAdapter() throws IOException {
    // A fourth text encoder (OneTrainer's lora_te4_, HiDream's Llama) is not read: two of three modules would go.
    Random random = new Random(13);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    kohyaModule(tensors, random, "lora_unet_double_blocks_0_img_attn_proj", INNER, INNER);
    kohyaModule(tensors, random, "lora_te4_model_layers_0_self_attn_q_proj", 4096, 4096);
    kohyaModule(tensors, random, "lora_te4_model_layers_0_self_attn_k_proj", 4096, 1024);
    Path path = folder.resolve("te4.safetensors");
    Safetensors.write(path, tensors, ImmutableMap.of());
    LoraReadOptions skip = LoraReadOptions.builder().skipUnsupported(true).build();
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> LoraFiles.read(path, skip))
        .isInstanceOf(dev.loramerge.LoraMergeException.class)
        .hasMessage("te4.safetensors: skipping what cannot be read would drop 2 of the adapter's 3 modules"
            + " ('lora_te4_model_layers_0_self_attn_k_proj', 'lora_te4_model_layers_0_self_attn_q_proj')"
            + " and keep 1; refusing to make a result from what is left");
  }
}

package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.Safetensors;
import dev.loramerge.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Rows of {@code docs/format-coverage.md} that no other test ran through the command, each with
 * the trainer's real key names and shapes:
 *
 * <ul>
 *   <li>SD3.5 Medium kohya names (sd-scripts {@code networks/lora_sd3.py}: {@code lora_unet_} plus
 *       the underscored MMDiT path) fused into a base in the MMDiT names bare (Stability's {@code
 *       sd3.5_medium.safetensors} transformer alone) and under {@code diffusion_model.} (ComfyUI's
 *       {@code comfy/utils.py} state dicts); {@code qkv} stacks q, k, v by rows
 *       ({@code scripts/convert_sd3_to_diffusers.py});
 *   <li>OneTrainer's Flux keys ({@code modules/util/convert/convert_flux_lora.py}: {@code
 *       lora_transformer_} plus the underscored diffusers path) fused into BFL's names ({@code
 *       flux1-dev.safetensors}): {@code to_q} is rows 0–3071 of {@code img_attn.qkv}, {@code
 *       to_add_out} is {@code txt_attn.proj}, {@code proj_mlp} rows 9216–21503 of {@code
 *       single_blocks.N.linear1} (diffusers' {@code convert_flux_to_diffusers.py});
 *   <li>ai-toolkit's Flux LoRA (diffusers keys {@code transformer.transformer_blocks.N.attn.to_q.lora_A.weight},
 *       no alphas, so scale 1 as diffusers loads it) merged with a kohya one;
 *   <li>an SD2.x kohya LoRA (sd-scripts {@code train_network.py}: {@code lora_unet_} plus the
 *       underscored diffusers path, {@code lora_te_text_model_…}; 1024-wide cross-attention and
 *       OpenCLIP-H text encoder) through the PEFT and diffusers layouts and back.
 * </ul>
 */
class LayoutCoverageCommandTest {
  private static final long SD35_MEDIUM = 1536;
  private static final long FLUX = 3072;
  private static final int RANK = 4;

  @TempDir Path temp;

  private final CommandRun command = CommandRun.clearingBeforeEachRun();

  private static TensorData gaussian(Random random, DType dtype, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }

  /** A kohya module of rank 4 with alpha 8: scale 2, so a lost alpha shows. */
  private static void kohya(Map<String, TensorData> tensors, Random random, String name, long in, long out) {
    tensors.put(name + ".alpha", TensorData.ofDoubles(new double[] {8}, DType.F32));
    tensors.put(name + ".lora_down.weight", gaussian(random, DType.F32, RANK, in));
    tensors.put(name + ".lora_up.weight", gaussian(random, DType.F32, out, RANK));
  }

  /** scale · (up[row] · down[:, column]) in float64. */
  private static double product(TensorData up, TensorData down, double scale, long row, long column) {
    long in = down.dim(1);
    double sum = 0;
    for (int k = 0; k < RANK; k++) {
      sum += up.getDouble(row * RANK + k) * down.getDouble(k * in + column);
    }
    return scale * sum;
  }

  /** Half a unit in the last place of {@code value} in {@code dtype} (F32 or BF16), a hair over. */
  private static double halfUlp(double value, DType dtype) {
    double ulp = Math.ulp((float) value) * (dtype == DType.BF16 ? 65536 : 1);
    return ulp / 2 * (1 + 1e-9);
  }

  /**
   * Checks rows {@code rows} of {@code fused} (a [*, in] weight) against base + w·scale·up·down,
   * the update's row {@code r} landing in row {@code firstRow + r}.
   */
  private static void assertFusedRows(
      TensorData base, TensorData fused, TensorData up, TensorData down, double weightTimesScale, long firstRow,
      long[] rows, String what) {
    long in = base.dim(1);
    for (long row : rows) {
      for (long column = 0; column < in; column += 97) {
        long index = (firstRow + row) * in + column;
        double exact = base.getDouble(index) + product(up, down, weightTimesScale, row, column);
        assertThat(fused.getDouble(index))
            .as("%s: row %d column %d, exact %s", what, firstRow + row, column, exact)
            .isCloseTo(exact, within(halfUlp(exact, fused.dtype())));
      }
    }
  }

  @Test
  void kohyaSd35FusesIntoBareAndDiffusionModelPrefixedMmditNamesWithTheSameBytes() throws IOException {
    Random random = new Random(2);
    Map<String, TensorData> lora = new LinkedHashMap<>();
    kohya(lora, random, "lora_unet_joint_blocks_0_x_block_attn_qkv", SD35_MEDIUM, 3 * SD35_MEDIUM);
    kohya(lora, random, "lora_unet_joint_blocks_0_x_block_attn_proj", SD35_MEDIUM, SD35_MEDIUM);
    Path loraFile = temp.resolve("sd35-kohya.safetensors");
    Safetensors.write(loraFile, lora, Map.of("ss_network_module", "networks.lora_sd3"));
    TensorData qkv = gaussian(random, DType.F32, 3 * SD35_MEDIUM, SD35_MEDIUM);
    TensorData proj = gaussian(random, DType.F32, SD35_MEDIUM, SD35_MEDIUM);

    Map<String, TensorData> fusedByPrefix = new LinkedHashMap<>();
    for (String prefix : new String[] {"", "diffusion_model."}) {
      Path base = temp.resolve("base-" + prefix + "safetensors");
      Safetensors.write(base, Map.of(prefix + "joint_blocks.0.x_block.attn.qkv.weight", qkv,
          prefix + "joint_blocks.0.x_block.attn.proj.weight", proj), Map.of());
      Path fused = temp.resolve("fused-" + prefix + "safetensors");
      assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), loraFile + "=0.8"))
          .as("fuse into '%s' names; stderr: %s", prefix, command.err()).isZero();
      assertThat(command.out()).as("prefix '%s'", prefix).contains("fused 4 modules into");
      try (SafetensorsFile file = SafetensorsFile.open(fused)) {
        TensorData fusedQkv = file.tensor(prefix + "joint_blocks.0.x_block.attn.qkv.weight");
        // The fused up holds q, k, v by rows, all sharing the down: row r of the fused weight is row r of the up.
        assertFusedRows(qkv, fusedQkv, lora.get("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight"),
            lora.get("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"), 0.8 * 2, 0,
            new long[] {0, SD35_MEDIUM - 1, SD35_MEDIUM, 2 * SD35_MEDIUM + 7, 3 * SD35_MEDIUM - 1}, prefix + "qkv");
        TensorData fusedProj = file.tensor(prefix + "joint_blocks.0.x_block.attn.proj.weight");
        assertFusedRows(proj, fusedProj, lora.get("lora_unet_joint_blocks_0_x_block_attn_proj.lora_up.weight"),
            lora.get("lora_unet_joint_blocks_0_x_block_attn_proj.lora_down.weight"), 0.8 * 2, 0,
            new long[] {0, 700, SD35_MEDIUM - 1}, prefix + "proj");
        fusedByPrefix.put(prefix + "qkv", fusedQkv);
      }
    }
    assertThat(fusedByPrefix.get("qkv")).as("bare and diffusion_model.-prefixed fuses give the same bytes")
        .isEqualTo(fusedByPrefix.get("diffusion_model.qkv"));
  }

  @Test
  void oneTrainerFluxLoraFusesIntoBflNamesByRows() throws IOException {
    Random random = new Random(3);
    Map<String, TensorData> lora = new LinkedHashMap<>();
    kohya(lora, random, "lora_transformer_transformer_blocks_0_attn_to_q", FLUX, FLUX);
    kohya(lora, random, "lora_transformer_transformer_blocks_0_attn_to_add_out", FLUX, FLUX);
    kohya(lora, random, "lora_transformer_single_transformer_blocks_3_proj_mlp", FLUX, 4 * FLUX);
    Path loraFile = temp.resolve("onetrainer.safetensors");
    Safetensors.write(loraFile, lora, Map.of());
    TensorData qkv = gaussian(random, DType.BF16, 3 * FLUX, FLUX);
    TensorData txtProj = gaussian(random, DType.BF16, FLUX, FLUX);
    TensorData linear1 = gaussian(random, DType.BF16, 3 * FLUX + 4 * FLUX, FLUX);
    Path base = temp.resolve("flux1-dev.safetensors");
    Safetensors.write(base, Map.of("double_blocks.0.img_attn.qkv.weight", qkv, "double_blocks.0.txt_attn.proj.weight", txtProj,
        "single_blocks.3.linear1.weight", linear1), Map.of());

    Path fused = temp.resolve("fused.safetensors");
    assertThat(command.run("fuse", "--base", base.toString(), "-o", fused.toString(), loraFile + "=0.5"))
        .as("fuse; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("fused 3 modules into");
    String toQ = "lora_transformer_transformer_blocks_0_attn_to_q";
    String addOut = "lora_transformer_transformer_blocks_0_attn_to_add_out";
    String mlp = "lora_transformer_single_transformer_blocks_3_proj_mlp";
    try (SafetensorsFile file = SafetensorsFile.open(fused)) {
      TensorData fusedQkv = file.tensor("double_blocks.0.img_attn.qkv.weight");
      assertFusedRows(qkv, fusedQkv, lora.get(toQ + ".lora_up.weight"), lora.get(toQ + ".lora_down.weight"), 0.5 * 2, 0,
          new long[] {0, 1234, FLUX - 1}, "to_q in img_attn.qkv");
      for (long row : new long[] {FLUX, 2 * FLUX, 3 * FLUX - 1}) {
        for (long column = 0; column < FLUX; column += 97) {
          long index = row * FLUX + column;
          assertThat(fusedQkv.getDouble(index)).as("k and v rows of img_attn.qkv untouched: row %d column %d", row, column)
              .isEqualTo(qkv.getDouble(index));
        }
      }
      assertFusedRows(txtProj, file.tensor("double_blocks.0.txt_attn.proj.weight"), lora.get(addOut + ".lora_up.weight"),
          lora.get(addOut + ".lora_down.weight"), 0.5 * 2, 0, new long[] {0, 99, FLUX - 1}, "to_add_out in txt_attn.proj");
      TensorData fusedLinear1 = file.tensor("single_blocks.3.linear1.weight");
      assertFusedRows(linear1, fusedLinear1, lora.get(mlp + ".lora_up.weight"), lora.get(mlp + ".lora_down.weight"), 0.5 * 2,
          3 * FLUX, new long[] {0, 5000, 4 * FLUX - 1}, "proj_mlp in linear1");
      assertThat(fusedLinear1.getDouble(5 * FLUX)).as("linear1's qkv rows untouched").isEqualTo(linear1.getDouble(5 * FLUX));
    }
  }

  @Test
  void aiToolkitFluxLoraWithoutAlphasMergesWithAKohyaOne() throws IOException {
    Random random = new Random(4);
    Map<String, TensorData> aiToolkit = new LinkedHashMap<>();
    for (String part : new String[] {"to_q", "to_k", "to_v"}) {
      aiToolkit.put("transformer.transformer_blocks.0.attn." + part + ".lora_A.weight", gaussian(random, DType.BF16, RANK, FLUX));
      aiToolkit.put("transformer.transformer_blocks.0.attn." + part + ".lora_B.weight", gaussian(random, DType.BF16, FLUX, RANK));
    }
    Path aiToolkitFile = temp.resolve("ai-toolkit.safetensors");
    Safetensors.write(aiToolkitFile, aiToolkit, Map.of());
    Map<String, TensorData> kohya = new LinkedHashMap<>();
    kohya(kohya, random, "lora_unet_double_blocks_0_img_attn_qkv", FLUX, 3 * FLUX);
    Path kohyaFile = temp.resolve("kohya.safetensors");
    Safetensors.write(kohyaFile, kohya, Map.of("ss_network_module", "networks.lora_flux"));

    Path merged = temp.resolve("merged.safetensors");
    assertThat(command.run("merge", "-o", merged.toString(), aiToolkitFile + "=0.5", kohyaFile + "=0.75"))
        .as("merge; stderr: %s", command.err()).isZero();
    assertThat(command.out()).contains("(diffusers, 3 modules)");
    LoraAdapter result = LoraFiles.read(merged);
    String[] parts = {"to_q", "to_k", "to_v"};
    for (int p = 0; p < parts.length; p++) {
      LoraModule module = result.module(ModuleKey.of(Component.TRANSFORMER, "transformer_blocks.0.attn." + parts[p])).orElseThrow();
      double[] delta = module.deltaF64();
      String a = "transformer.transformer_blocks.0.attn." + parts[p];
      for (long row : new long[] {0, 777, FLUX - 1}) {
        for (long column = 0; column < FLUX; column += 211) {
          // ai-toolkit: no alpha, so scale 1; kohya: alpha 8 over rank 4, its qkv up's rows p·3072 onwards.
          double exact = product(aiToolkit.get(a + ".lora_B.weight"), aiToolkit.get(a + ".lora_A.weight"), 0.5, row, column)
              + product(kohya.get("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"),
                  kohya.get("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"), 0.75 * 2, p * FLUX + row, column);
          assertThat(delta[Math.toIntExact(row * FLUX + column)]).as("%s row %d column %d", parts[p], row, column)
              .isCloseTo(exact, within(1e-6 * (Math.abs(exact) + 1e-3)));
        }
      }
    }
  }

  @Test
  void sd2KohyaLoraGoesThroughPeftAndDiffusersAndBackBitForBit() throws IOException {
    Random random = new Random(5);
    Map<String, TensorData> unet = new LinkedHashMap<>();
    kohya(unet, random, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 1024, 320);
    kohya(unet, random, "lora_unet_up_blocks_3_attentions_2_proj_out", 320, 320);
    Path unetFile = temp.resolve("sd2-unet.safetensors");
    Safetensors.write(unetFile, unet, Map.of("ss_network_module", "networks.lora"));
    Map<String, TensorData> both = new LinkedHashMap<>(unet);
    kohya(both, random, "lora_te_text_model_encoder_layers_22_self_attn_q_proj", 1024, 1024);
    Path bothFile = temp.resolve("sd2.safetensors");
    Safetensors.write(bothFile, both, Map.of("ss_network_module", "networks.lora"));

    // A PEFT folder holds one model: the UNet alone.
    for (Object[] way : new Object[][] {{"peft", unetFile, unet, temp.resolve("peft")},
        {"diffusers", bothFile, both, temp.resolve("sd2-diffusers.safetensors")}}) {
      Path converted = (Path) way[3];
      assertThat(command.run("convert", "--to", (String) way[0], "-o", converted.toString(), way[1].toString()))
          .as("convert to %s; stderr: %s", way[0], command.err()).isZero();
      assertThat(command.run("inspect", converted.toString())).as("inspect %s; stderr: %s", way[0], command.err()).isZero();
      assertThat(command.out()).containsPattern("format +" + way[0] + "\\n").containsPattern("architecture +SD2\\.x\\n");
      Path back = temp.resolve("back-from-" + way[0] + ".safetensors");
      assertThat(command.run("convert", "--to", "kohya", "-o", back.toString(), converted.toString()))
          .as("back from %s; stderr: %s", way[0], command.err()).isZero();
      @SuppressWarnings("unchecked")
      Map<String, TensorData> original = (Map<String, TensorData>) way[2];
      try (SafetensorsFile file = SafetensorsFile.open(back)) {
        assertThat(file.tensors().stream().map(TensorSpec::name)).as("names back from %s", way[0]).containsExactlyInAnyOrderElementsOf(original.keySet());
        for (Map.Entry<String, TensorData> tensor : original.entrySet()) {
          assertThat(file.tensor(tensor.getKey())).as("%s back from %s", tensor.getKey(), way[0]).isEqualTo(tensor.getValue());
        }
      }
    }
  }
}

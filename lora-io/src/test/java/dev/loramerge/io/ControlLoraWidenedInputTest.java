package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.fuse.FuseReport;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.internal.json.Json;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The {@code img_in} of BFL's Flux.1 control LoRAs (FLUX.1-Canny-dev-lora, FLUX.1-Depth-dev-lora),
 * built in code with its real names and shapes ({@code img_in.lora_A.weight} [r, 128], {@code
 * lora_B.weight} [3072, r], {@code lora_B.bias} [3072], bf16), fused into a Flux.1-dev base whose
 * {@code img_in.weight} is [3072, 64].
 *
 * <ul>
 *   <li>Semantics: diffusers' {@code FluxLoraLoaderMixin._maybe_expand_transformer_param_shape_or_error_}
 *       ({@code loaders/lora_pipeline.py}: "Control LoRA expands the shape of the input layer
 *       from (3072, 64) to (3072, 128)") replaces the Linear by one of the LoRA's input features,
 *       its weight {@code torch.zeros_like} with the base's in the first columns, the bias kept,
 *       and sets the config's {@code in_channels}; the LoRA then applies to that weight. So the
 *       fused weight is [W | 0] + w·s·B·A, rounded once here, and the new columns hold the update
 *       alone.
 *   <li>ComfyUI reads a Flux checkpoint's {@code in_channels} from {@code img_in.weight}'s second
 *       dimension ({@code comfy/model_detection.py} {@code detect_unet_config}: {@code
 *       state_dict[in_key].shape[1] // (patch_size * patch_size)}), so the widened file loads
 *       there as the control model.
 *   <li>Names: BFL's bare {@code img_in}, ComfyUI's {@code model.diffusion_model.img_in} and
 *       diffusers' {@code x_embedder} in a transformer file ({@code
 *       _convert_bfl_flux_control_lora_to_diffusers} maps {@code img_in} to {@code x_embedder}).
 * </ul>
 */
class ControlLoraWidenedInputTest {
  private static final int INNER = 3072;
  private static final int LATENT = 64;
  private static final int CONTROL = 128;
  private static final int RANK = 4;
  private static final double WEIGHT = 0.75;
  private static final ModuleKey X_EMBEDDER = ModuleKey.of(Component.TRANSFORMER, "x_embedder");

  @TempDir Path folder;

  /** The control LoRA's img_in (and one plain LoRA module, double block 0's img_attn.proj), in BFL names. */
  private Path control(long seed, boolean bias) throws IOException {
    Random random = new Random(seed);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("img_in.lora_A.weight", TestTensors.gaussian(random, DType.BF16, RANK, CONTROL));
    tensors.put("img_in.lora_B.weight", TestTensors.gaussian(random, DType.BF16, INNER, RANK));
    if (bias) {
      tensors.put("img_in.lora_B.bias", TestTensors.gaussian(random, DType.BF16, INNER));
    }
    Path path = folder.resolve("control-" + seed + (bias ? "-bias" : "") + ".safetensors");
    Safetensors.write(path, tensors, Map.of());
    return path;
  }

  static Stream<Arguments> bases() {
    return Stream.of("bfl", "comfyui", "diffusers").flatMap(naming -> Stream.of(
        DType.F32, DType.F16, DType.BF16, DType.F8_E4M3, DType.F8_E5M2).map(dtype -> Arguments.of(naming, dtype)));
  }

  private static String name(String naming, String suffix) {
    return switch (naming) {
      case "bfl" -> "img_in." + suffix;
      case "comfyui" -> "model.diffusion_model.img_in." + suffix;
      default -> "x_embedder." + suffix;
    };
  }

  /** A base with img_in's weight [3072, 64] and bias, and one tensor nothing touches. */
  private Path base(String naming, DType dtype) throws IOException {
    Random random = new Random(23);
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put(name(naming, "weight"), TestTensors.typed(TestTensors.gaussian(random, DType.F64, INNER, LATENT), dtype));
    tensors.put(name(naming, "bias"), TestTensors.typed(TestTensors.gaussian(random, DType.F64, INNER), dtype));
    tensors.put(naming.equals("diffusers") ? "proj_out.bias" : "final_layer.linear.bias",
        TestTensors.typed(TestTensors.gaussian(random, DType.F64, LATENT), dtype));
    Path base = folder.resolve("base-" + naming + "-" + dtype.safetensorsName() + ".safetensors");
    Safetensors.write(base, tensors, Map.of());
    return base;
  }

  private static long bits(ByteBuffer bytes, int index, DType dtype) {
    return switch (dtype.byteSize()) {
      case 4 -> bytes.getInt(index * 4);
      case 2 -> bytes.getShort(index * 2) & 0xffff;
      default -> bytes.get(index) & 0xff;
    };
  }

  /**
   * Every value of the widened weight is [W | 0] + w·B·A (no alpha: scale 1) from an
   * independent float64 sum, rounded once (the tests' own round-to-nearest-even search); the
   * bias is the base's plus w times the lora_B.bias; the recipe records the widening; and a
   * restore from the original gives back its bytes, [3072, 64] again.
   */
  @ParameterizedTest
  @MethodSource("bases")
  void imgInIsWidenedWithZeroColumnsAndFusedExactly(String naming, DType dtype) throws IOException {
    Path control = control(1, true);
    LoraAdapter adapter = LoraFiles.read(control);
    assertThat(Architecture.detect(adapter)).as("a widened img_in is Flux.1's").contains(Architecture.flux());
    assertThat(adapter.module(X_EMBEDDER).orElseThrow().weightShape()).containsExactly(INNER, CONTROL);
    Path base = base(naming, dtype);
    Path fused = folder.resolve("fused.safetensors");
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(adapter, WEIGHT).build());
    FuseReport report = fuser.fuseInto(SafetensorsWeights.of(base, fused)).report();
    assertThat(report.widened()).containsExactly(new FuseReport.Widened(X_EMBEDDER, name(naming, "weight"), LATENT, CONTROL));

    double[] loraBias;
    try (SafetensorsFile lora = SafetensorsFile.open(control)) {
      loraBias = lora.tensor("img_in.lora_B.bias").toDoubleArray();
    }
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      assertThat(after.spec(name(naming, "weight")).orElseThrow().shape()).as("widened").containsExactly(INNER, CONTROL);
      assertThat(after.spec(name(naming, "weight")).orElseThrow().dtype()).isEqualTo(dtype);
      assertWidened(control, before.tensor(name(naming, "weight")).toDoubleArray(), after.tensor(name(naming, "weight")).bytes(),
          dtype, null);
      double[] bias = before.tensor(name(naming, "bias")).toDoubleArray();
      ByteBuffer fusedBias = after.tensor(name(naming, "bias")).bytes().order(ByteOrder.LITTLE_ENDIAN);
      assertThat(after.spec(name(naming, "bias")).orElseThrow().shape()).as("the bias keeps its shape").containsExactly(INNER);
      for (int i = 0; i < INNER; i++) {
        double exact = bias[i] + WEIGHT * loraBias[i];
        assertThat(bits(fusedBias, i, dtype)).as("%s %s bias[%d], exact %s", naming, dtype, i, exact)
            .isEqualTo(AdapterKindsFuseTest.Nearest.code(exact, dtype));
      }
      String untouched = naming.equals("diffusers") ? "proj_out.bias" : "final_layer.linear.bias";
      assertThat(after.tensor(untouched)).isEqualTo(before.tensor(untouched));
      Map<String, Object> recipe = Json.parseObject(after.metadata().get(LoraMerger.RECIPE_KEY));
      assertThat(recipe.get("widened_input_features")).as("recipe %s", recipe)
          .isEqualTo(Map.of(name(naming, "weight"), List.of(new BigDecimal(LATENT), new BigDecimal(CONTROL))));
    }

    Path restored = folder.resolve("restored.safetensors");
    fuser.fuseInto(SafetensorsWeights.restoring(fused, base, restored));
    assertThat(Files.readAllBytes(restored)).as("restored %s %s base", naming, dtype).isEqualTo(Files.readAllBytes(base));
  }

  /**
   * Asserts that {@code actual}, the widened weight's {@code dtype} codes, is [W | 0] + w·B·A of
   * {@code control}'s factors, each value divided by its row's {@code scales} (null: 1) and
   * rounded once.
   */
  private static void assertWidened(Path control, double[] weight, ByteBuffer actual, DType dtype, double[] scales)
      throws IOException {
    actual.order(ByteOrder.LITTLE_ENDIAN);
    double[] up;
    double[] down;
    try (SafetensorsFile lora = SafetensorsFile.open(control)) {
      up = lora.tensor("img_in.lora_B.weight").toDoubleArray();
      down = lora.tensor("img_in.lora_A.weight").toDoubleArray();
    }
    for (int i = 0; i < INNER; i++) {
      for (int j = 0; j < CONTROL; j++) {
        double delta = 0;
        for (int k = 0; k < RANK; k++) {
          delta += up[i * RANK + k] * down[k * CONTROL + j];
        }
        double exact = (j < LATENT ? weight[i * LATENT + j] : 0) + WEIGHT * delta;
        long expected = AdapterKindsFuseTest.Nearest.code(scales == null ? exact : exact / scales[i], dtype);
        long found = bits(actual, i * CONTROL + j, dtype);
        if (found != expected) {
          assertThat(found).as("%s img_in[%d][%d], exact %s", dtype, i, j, exact).isEqualTo(expected);
        }
      }
    }
  }

  /**
   * Without a bias difference the weight goes through the fuse kernel, and with {@code --dtype}
   * (withDType) it is written in the new type; the values are the same exact sums, rounded once.
   */
  @Test
  void withoutABiasTheKernelWidensAlikeAndADtypeConversionToo() throws IOException {
    Path control = control(2, false);
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(control), WEIGHT).build());
    Path base = base("bfl", DType.F16);
    for (DType output : new DType[] {DType.F16, DType.F32}) {
      Path fused = folder.resolve("kernel-" + output.safetensorsName() + ".safetensors");
      SafetensorsWeights target = SafetensorsWeights.of(base, fused);
      fuser.fuseInto(output == DType.F16 ? target : target.withDType(output));
      try (SafetensorsFile before = SafetensorsFile.open(base);
          SafetensorsFile after = SafetensorsFile.open(fused)) {
        assertThat(after.spec("img_in.weight").orElseThrow().shape()).containsExactly(INNER, CONTROL);
        assertThat(after.spec("img_in.weight").orElseThrow().dtype()).isEqualTo(output);
        assertWidened(control, before.tensor("img_in.weight").toDoubleArray(), after.tensor("img_in.weight").bytes(), output, null);
        assertThat(after.tensor("img_in.bias").toDoubleArray()).as("no bias difference: the bias is the base's")
            .isEqualTo(before.tensor("img_in.bias").toDoubleArray());
      }
    }
  }

  /**
   * A scaled float8 base (ComfyUI's {@code img_in.scale_weight}, one F32 scale per row): the
   * weight is decoded as code·scale, widened and fused in float64, and each value stored as the
   * code nearest to it divided by its row's scale; the scale is kept.
   */
  @Test
  void aScaledFloat8BaseIsWidenedRowByRow() throws IOException {
    Path control = control(7, false);
    Random random = new Random(29);
    double[] scales = new double[INNER];
    for (int i = 0; i < INNER; i++) {
      scales[i] = 0.01 * (1 + random.nextInt(8));
    }
    double[] weight = TestTensors.gaussian(random, DType.F64, INNER, LATENT).toDoubleArray();
    byte[] codes = new byte[weight.length];
    for (int i = 0; i < weight.length; i++) {
      codes[i] = (byte) AdapterKindsFuseTest.Nearest.code(weight[i] / scales[i / LATENT], DType.F8_E4M3);
    }
    TensorData stored = TensorData.of(DType.F8_E4M3, new long[] {INNER, LATENT}, ByteBuffer.wrap(codes));
    double[] values = stored.toDoubleArray();
    double[] decoded = new double[values.length];
    for (int i = 0; i < values.length; i++) {
      decoded[i] = values[i] * scales[i / LATENT];
    }
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    tensors.put("model.diffusion_model.img_in.weight", stored);
    tensors.put("model.diffusion_model.img_in.scale_weight", TensorData.ofDoubles(scales, DType.F32, INNER, 1));
    Path base = folder.resolve("scaled.safetensors");
    Safetensors.write(base, tensors, Map.of());
    Path fused = folder.resolve("scaled-fused.safetensors");
    LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(control), WEIGHT).build()).fuseInto(SafetensorsWeights.of(base, fused));
    try (SafetensorsFile after = SafetensorsFile.open(fused)) {
      assertThat(after.spec("model.diffusion_model.img_in.weight").orElseThrow().shape()).containsExactly(INNER, CONTROL);
      assertWidened(control, decoded, after.tensor("model.diffusion_model.img_in.weight").bytes(), DType.F8_E4M3, scales);
      assertThat(after.tensor("model.diffusion_model.img_in.scale_weight"))
          .isEqualTo(TensorData.ofDoubles(scales, DType.F32, INNER, 1));
    }
  }

  @Test
  void subtractingAWideningUpdateIsRefused() throws IOException {
    LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(control(3, true)), 1).build());
    Path base = base("bfl", DType.BF16);
    Path fused = folder.resolve("fused.safetensors");
    fuser.fuseInto(SafetensorsWeights.of(base, fused));
    Path subtracted = folder.resolve("subtracted.safetensors");
    assertThatThrownBy(() -> fuser.unfuseFrom(SafetensorsWeights.of(fused, subtracted)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("module 'transformer.x_embedder' updates 128 input features where Flux.1's weight has 64: a fuse widened"
            + " base weight 'img_in.weight' to them, and subtracting the update cannot narrow it back; restore the original"
            + " base instead (SafetensorsWeights.restoring, lora unfuse --original)");
    assertThat(subtracted).doesNotExist();
  }

  /** An NDArray cannot change its shape: the in-memory target refuses before writing anything. */
  @Test
  void anInMemoryTargetRefusesToWiden() throws IOException {
    LoraAdapter adapter = LoraFiles.read(control(4, false));
    float[] values = new float[INNER * LATENT];
    for (int i = 0; i < values.length; i++) {
      values[i] = i % 7 - 3;
    }
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray weight = manager.create(values, new Shape(INNER, LATENT));
      WeightTarget target = WeightTarget.of(Map.of("img_in.weight", weight));
      assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(adapter, 1).build()).fuseInto(target))
          .isInstanceOf(LoraMergeException.class)
          .hasMessage("module 'transformer.x_embedder' (weight 'img_in.weight') would be widened from [3072, 64] to [3072, 128],"
              + " and an in-memory target cannot change an array's shape; fuse into the model's file (SafetensorsWeights),"
              + " or widen the array with zero columns first");
      assertThat(weight.toFloatArray()).as("untouched").isEqualTo(values);
    }
  }

  /**
   * Only img_in widens: a wider input of another module, or a narrower img_in, is a LoRA for
   * another model, refused naming the module.
   */
  @Test
  void otherShapeChangesAreRefusedByModule() throws IOException {
    Random random = new Random(5);
    ModuleKey txtIn = ModuleKey.of(Component.TRANSFORMER, "context_embedder");
    assertThat(Architecture.flux().widensInput(txtIn, new long[] {INNER, 8192})).isFalse();
    assertThat(Architecture.flux().widensInput(X_EMBEDDER, new long[] {INNER, 32})).isFalse();
    assertThat(Architecture.sd35Medium().widensInput(ModuleKey.of(Component.TRANSFORMER, "pos_embed.proj"), new long[] {1536, 32, 2, 2}))
        .isFalse();

    Map<String, TensorData> wider = new LinkedHashMap<>();
    wider.put("txt_in.lora_A.weight", TestTensors.gaussian(random, DType.BF16, RANK, 8192));
    wider.put("txt_in.lora_B.weight", TestTensors.gaussian(random, DType.BF16, INNER, RANK));
    Path widerPath = folder.resolve("wider-txt-in.safetensors");
    Safetensors.write(widerPath, wider, Map.of());
    assertThatThrownBy(() -> LoraFiles.read(widerPath))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("wider-txt-in.safetensors: module 'txt_in' updates a [3072, 8192] weight, but Flux.1's 'txt_in' is [3072, 4096]");

    LoraModule narrow = LoraModule.of(X_EMBEDDER, TestTensors.gaussian(random, DType.F32, RANK, 32),
        TestTensors.gaussian(random, DType.F32, INNER, RANK), RANK);
    LoraAdapter narrowAdapter = LoraAdapter.builder().name("narrow").add(narrow).build();
    Path base = base("bfl", DType.F32);
    Path out = folder.resolve("narrow-fused.safetensors");
    assertThatThrownBy(() -> LoraFuser.builder().merger(LoraMerger.builder().add(narrowAdapter, 1).build())
            .architecture(Architecture.flux()).build().fuseInto(SafetensorsWeights.of(base, out)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessageContaining("module 'transformer.x_embedder' updates a [3072, 32] weight but base weight 'img_in.weight' is F32[3072, 64]");
    assertThat(out).doesNotExist();
  }

  /**
   * The widened img_in goes through kohya ({@code lora_unet_img_in}, its bias as {@code diff_b})
   * and diffusers ({@code transformer.x_embedder}, as diffusers' own control LoRAs name it,
   * {@code examples/flux-control/train_control_lora_flux.py}) and back unchanged, and both are
   * still read as Flux.1's.
   */
  @Test
  void convertsToKohyaAndDiffusersAndBack() throws IOException {
    LoraAdapter adapter = LoraFiles.read(control(6, true));
    for (LoraFormat format : new LoraFormat[] {LoraFormat.KOHYA, LoraFormat.DIFFUSERS}) {
      Path written = folder.resolve("control-" + format.cliName() + ".safetensors");
      LoraFiles.write(adapter, written, format);
      LoraAdapter back = LoraFiles.read(written);
      assertThat(back.modules()).as(format.cliName()).isEqualTo(adapter.modules());
      assertThat(Architecture.detect(back)).as(format.cliName()).contains(Architecture.flux());
    }
    try (SafetensorsFile kohya = SafetensorsFile.open(folder.resolve("control-kohya.safetensors"))) {
      assertThat(kohya.spec("lora_unet_img_in.lora_down.weight").orElseThrow().shape()).containsExactly(RANK, CONTROL);
    }
  }

  /**
   * Two control LoRAs widen img_in once, with the sum of their updates; a control LoRA with a
   * LoRA whose img_in takes the base's 64 features is refused, naming the module.
   */
  @Test
  void twoControlLorasWidenOnceAndAMixOfWidthsIsRefused() throws IOException {
    Path canny = control(8, false);
    Path depth = control(9, false);
    Path base = base("bfl", DType.F32);
    Path fused = folder.resolve("two.safetensors");
    FuseReport report = LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(canny), 0.5).add(LoraFiles.read(depth), 0.25).build())
        .fuseInto(SafetensorsWeights.of(base, fused)).report();
    assertThat(report.widened()).hasSize(1);
    double[] up1;
    double[] down1;
    double[] up2;
    double[] down2;
    try (SafetensorsFile first = SafetensorsFile.open(canny);
        SafetensorsFile second = SafetensorsFile.open(depth)) {
      up1 = first.tensor("img_in.lora_B.weight").toDoubleArray();
      down1 = first.tensor("img_in.lora_A.weight").toDoubleArray();
      up2 = second.tensor("img_in.lora_B.weight").toDoubleArray();
      down2 = second.tensor("img_in.lora_A.weight").toDoubleArray();
    }
    try (SafetensorsFile before = SafetensorsFile.open(base);
        SafetensorsFile after = SafetensorsFile.open(fused)) {
      double[] weight = before.tensor("img_in.weight").toDoubleArray();
      ByteBuffer actual = after.tensor("img_in.weight").bytes().order(ByteOrder.LITTLE_ENDIAN);
      for (int i = 0; i < INNER; i += 97) {
        for (int j = 0; j < CONTROL; j++) {
          double one = 0;
          double two = 0;
          for (int k = 0; k < RANK; k++) {
            one += up1[i * RANK + k] * down1[k * CONTROL + j];
            two += up2[i * RANK + k] * down2[k * CONTROL + j];
          }
          double exact = (j < LATENT ? weight[i * LATENT + j] : 0) + 0.5 * one + 0.25 * two;
          assertThat(bits(actual, i * CONTROL + j, DType.F32)).as("img_in[%d][%d], exact %s", i, j, exact)
              .isEqualTo(AdapterKindsFuseTest.Nearest.code(exact, DType.F32));
        }
      }
    }

    Random random = new Random(10);
    LoraAdapter plain = LoraAdapter.builder().name("plain").add(LoraModule.of(X_EMBEDDER,
        TestTensors.gaussian(random, DType.F32, RANK, LATENT), TestTensors.gaussian(random, DType.F32, INNER, RANK), RANK)).build();
    Path mixed = folder.resolve("mixed.safetensors");
    assertThatThrownBy(() -> LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(canny), 1).add(plain, 1).build())
            .fuseInto(SafetensorsWeights.of(base, mixed)))
        .isInstanceOf(LoraMergeException.class)
        .hasMessage("base-bfl-F32.safetensors: module 'transformer.x_embedder' updates [3072, 128] in adapter 'control-8' but"
            + " [3072, 64] in adapter 'plain'; the adapters are for different models");
    assertThat(mixed).doesNotExist();
  }
}

package dev.loramerge.merge;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.merge.MergeAlgorithm.Requirements;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.Offer;
import dev.loramerge.testing.TinyLora;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.Function;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;
import org.junit.jupiter.api.Test;

class LoraMergerTest {
  private static final LoraAdapter STYLE = TinyLora.adapter("style", 4, 8, 1);
  private static final LoraAdapter SUBJECT = TinyLora.adapter("subject", 2, 1, 2);
  private static final LoraAdapter DETAIL = TinyLora.adapter("detail", 3, 3, 3);

  @Test
  void catIsTheExactWeightedSum() {
    LoraAdapter merged = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, -0.5).add(DETAIL, 1.25).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      LoraModule module = merged.modules().get(key);
      assertThat(module.rank()).as("rank of %s", key).isEqualTo(9);
      assertThat(module.scale()).isEqualTo(1.0);
      double[] expected = TinyLora.weightedSum(key, new LoraAdapter[] {STYLE, SUBJECT, DETAIL}, new double[] {0.7, -0.5, 1.25});
      assertThat(TinyLora.relativeError(module.deltaF64(), expected)).as("relative error of %s", key).isLessThan(1e-6);
    }
    assertThat(merged.module(TinyLora.KEYS[2]).orElseThrow().down().shape()).containsExactly(9, 4, 3, 3);
    assertThat(merged.module(TinyLora.KEYS[2]).orElseThrow().up().shape()).containsExactly(6, 9, 1, 1);
  }

  @Test
  void catIsOrderInvariant() {
    LoraAdapter forward = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).merge();
    LoraAdapter backward = LoraMerger.builder().add(SUBJECT, 0.5).add(STYLE, 0.7).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      assertThat(TinyLora.relativeError(backward.modules().get(key).deltaF64(), forward.modules().get(key).deltaF64()))
          .isLessThan(1e-6);
    }
  }

  @Test
  void aZeroWeightRemovesTheAdapter() {
    LoraAdapter merged = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0).merge();
    LoraAdapter alone = LoraMerger.builder().add(STYLE, 0.7).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      assertThat(merged.modules().get(key).rank()).isEqualTo(4);
      assertThat(merged.modules().get(key).deltaF64()).containsExactly(alone.modules().get(key).deltaF64());
    }
  }

  @Test
  void anExplicitRankTruncatesByTheExactSvd() {
    LoraAdapter full = LoraMerger.builder().add(STYLE, 1).add(SUBJECT, 1).merge();
    LoraAdapter sameRank = LoraMerger.builder().add(STYLE, 1).add(SUBJECT, 1).rank(6).merge();
    LoraAdapter truncated = LoraMerger.builder().add(STYLE, 1).add(SUBJECT, 1).rank(2).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      double[] exact = full.modules().get(key).deltaF64();
      assertThat(sameRank.modules().get(key).rank()).isEqualTo(6);
      assertThat(TinyLora.relativeError(sameRank.modules().get(key).deltaF64(), exact))
          .as("rank ≥ the sum of ranks is exact for %s", key)
          .isLessThan(1e-5);
      assertThat(truncated.modules().get(key).rank()).isEqualTo(2);
      // Eckart–Young: the best rank-2 approximation, unique where σ₂ > σ₃, from a dense float64 SVD.
      int rows = Math.toIntExact(STYLE.modules().get(key).outFeatures());
      int columns = exact.length / rows;
      SingularValueDecomposition_F64<DMatrixRMaj> svd = DecompositionFactory_DDRM.svd(rows, columns, true, true, false);
      assertThat(svd.decompose(DMatrixRMaj.wrap(rows, columns, exact.clone()))).isTrue();
      double[] sigma = svd.getSingularValues().clone();
      java.util.Arrays.sort(sigma);
      int n = sigma.length;
      assertThat(sigma[n - 2] - sigma[n - 3]).as("a gap between σ₂ and σ₃ of %s", key).isGreaterThan(1e-3 * sigma[n - 1]);
      double optimalError = 0;
      double norm = 0;
      for (int i = 0; i < n; i++) {
        norm += sigma[i] * sigma[i];
        optimalError += i < n - 2 ? sigma[i] * sigma[i] : 0;
      }
      double error = TinyLora.relativeError(truncated.modules().get(key).deltaF64(), exact);
      assertThat(error)
          .as("error of the rank-2 truncation of %s against the optimal √(Σ_{i>2} σᵢ²)/‖Δ‖", key)
          .isCloseTo(Math.sqrt(optimalError / norm), org.assertj.core.data.Offset.offset(1e-6));
    }
  }

  @Test
  void svdClampClipsBothReRankedFactorsAtTheQuantileOfTheirEntries() {
    LoraMerger.Builder builder = LoraMerger.builder().add(STYLE, 1).add(SUBJECT, 0.5).rank(3).dtype(DType.F64);
    LoraAdapter plain = builder.build().merge();
    LoraAdapter clamped = builder.svdClamp(0.8).build().merge();
    for (ModuleKey key : TinyLora.KEYS) {
      double[] up = plain.modules().get(key).up().toDoubleArray();
      double[] down = plain.modules().get(key).down().toDoubleArray();
      double[] sorted = new double[up.length + down.length];
      System.arraycopy(up, 0, sorted, 0, up.length);
      System.arraycopy(down, 0, sorted, up.length, down.length);
      java.util.Arrays.sort(sorted);
      // torch.quantile's linear interpolation between the two nearest ranks
      double position = 0.8 * (sorted.length - 1);
      int below = (int) Math.floor(position);
      double limit = sorted[below] + (position - below) * (sorted[below + 1] - sorted[below]);
      assertThat(limit).as("the 0.8 quantile of %s is positive, so that clipping bites", key).isPositive();
      double[][] expected = {up.clone(), down.clone()};
      for (double[] factor : expected) {
        for (int i = 0; i < factor.length; i++) {
          factor[i] = Math.max(-limit, Math.min(limit, factor[i]));
        }
      }
      assertThat(clamped.modules().get(key).up().toDoubleArray()).as("clamped up factor of %s", key).containsExactly(expected[0]);
      assertThat(clamped.modules().get(key).down().toDoubleArray()).as("clamped down factor of %s", key).containsExactly(expected[1]);
      assertThat(expected[0]).as("some entry of %s was clipped", key).isNotEqualTo(up);
    }
  }

  @Test
  void recordsTheRecipe() {
    LoraAdapter merged = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).merge();
    assertThat(merged.metadata().get(LoraMerger.RECIPE_KEY))
        .isEqualTo(
            "{\"algorithm\":\"cat\",\"parameters\":{},\"inputs\":[{\"name\":\"style\",\"weight\":0.7},"
                + "{\"name\":\"subject\",\"weight\":0.5}],\"library\":\"development\"}");
  }

  @Test
  void sameResultOnOneAndTwoThreads() {
    LoraAdapter one = LoraMerger.builder().add(STYLE, 0.7).add(DETAIL, 0.5).rank(3).threads(1).merge();
    LoraAdapter two = LoraMerger.builder().add(STYLE, 0.7).add(DETAIL, 0.5).rank(3).threads(2).merge();
    assertThat(two).isEqualTo(one);
  }

  @Test
  void postPruningKeepsTheLargestEntriesOfEachFactor() {
    LoraAdapter pruned = LoraMerger.builder().add(STYLE, 1).prune(PostPrune.density(0.25)).merge();
    LoraAdapter full = LoraMerger.builder().add(STYLE, 1).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      float[] before = full.modules().get(key).down().toFloatArray();
      float[] after = pruned.modules().get(key).down().toFloatArray();
      int kept = 0;
      float smallestKept = Float.POSITIVE_INFINITY;
      float largestDropped = 0;
      for (int i = 0; i < before.length; i++) {
        if (after[i] != 0) {
          kept++;
          assertThat(after[i]).isEqualTo(before[i]);
          smallestKept = Math.min(smallestKept, Math.abs(before[i]));
        } else {
          largestDropped = Math.max(largestDropped, Math.abs(before[i]));
        }
      }
      assertThat(kept).as("entries kept in A of %s", key).isEqualTo(before.length / 4);
      assertThat(smallestKept).isGreaterThanOrEqualTo(largestDropped);
    }
    assertThat(pruned.metadata().get(LoraMerger.RECIPE_KEY)).contains("\"prune\":\"density=0.25\"");
  }

  @Test
  void deltasAreTheScaledProductsWhateverTheScale() {
    // Scales 1, ½ (folded into the smaller factor) and ¾ (applied to the product, as PEFT does).
    LoraAdapter one = TinyLora.adapter("one", 4, 4, 4);
    LoraAdapter half = TinyLora.adapter("half", 4, 2, 5);
    LoraAdapter threeQuarters = TinyLora.adapter("threeQuarters", 4, 3, 6);
    List<String> checked = new ArrayList<>();
    MergeAlgorithm probe =
        algorithm(
          "probe",
          Requirements.none().withReRanking(),
          module -> {
            for (ModuleInput input : module.inputs()) {
              float[] values = input.delta();
              float[] up = upValues(input);
              float[] down = downValues(input);
              NDManager manager = module.manager();
              NDArray upArray = manager.create(up, new Shape(up.length / input.module().rank(), input.module().rank()));
              NDArray downArray = manager.create(down, new Shape(input.module().rank(), down.length / input.module().rank()));
              float[] peft = upArray.matMul(downArray).muli(input.scale()).toFloatArray();
              assertThat(((ModuleFactors) input).deltaArray().toFloatArray())
                  .as("delta of %s, scale %s: PEFT's (B·A)·s to the bit", module.key(), input.scale())
                  .containsExactly(peft);
              int rank = input.module().rank();
              int columns = down.length / rank;
              for (int i = 0; i < values.length; i++) {
                double exact = 0;
                double magnitude = 0;
                for (int k = 0; k < rank; k++) {
                  double term = (double) up[i / columns * rank + k] * down[k * columns + i % columns];
                  exact += term;
                  magnitude += Math.abs(term);
                }
                // r roundings of a running sum, one of the scaling.
                double bound = (rank + 1) * 0x1p-24 * magnitude * input.scale() + Float.MIN_VALUE;
                assertThat((double) values[i])
                    .as("delta[%d] of %s, scale %s", i, module.key(), input.scale())
                    .isCloseTo(exact * input.scale(), org.assertj.core.data.Offset.offset(bound));
              }
              synchronized (checked) {
                checked.add(module.key() + "@" + input.scale());
              }
            }
            ModuleInput first = module.inputs().get(0);
            return new ModuleUpdate.Dense(first.delta(), Math.toIntExact(first.module().down().numel() / first.module().rank()));
          });
    LoraMerger.builder().add(one, 1).add(half, 1).add(threeQuarters, 1).algorithm(probe).rank(2).threads(1).merge();
    assertThat(checked).hasSize(3 * TinyLora.KEYS.length).anyMatch(s -> s.endsWith("@0.75")).anyMatch(s -> s.endsWith("@0.5"));
  }

  @Test
  void aFuseOffersFloat64OnlyToMethodsExactInIt() {
    for (boolean exact : new boolean[] {true, false}) {
      List<Offer> offers = new ArrayList<>();
      MergeAlgorithm probe =
          algorithm(
            "probe",
            exact ? Requirements.none().withExactFloat64() : Requirements.none(),
            module -> {
              synchronized (offers) {
                offers.add(module.offer());
              }
              return MergeAlgorithm.cat().merge(module);
            });
      LoraMerger merger = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).algorithm(probe).build();
      Float64Factors fused = merger.updates().factors(TinyLora.KEYS[0]);
      Float64Factors cat = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).build().updates().factors(TinyLora.KEYS[0]);
      Offer.Precision precision = exact ? Offer.Precision.FLOAT64 : Offer.Precision.FLOAT32;
      assertThat(offers).as("offers in a fuse, exact %s", exact).containsExactly(new Offer(precision, Optional.empty()));
      if (exact) {
        assertThat(fused.up()).as("the factors cat gives when offered float64, unrounded").containsExactly(cat.up());
      } else {
        for (int i = 0; i < fused.up().length; i++) {
          assertThat(fused.up()[i]).as("up[%d] rounded to float32", i).isEqualTo((double) (float) fused.up()[i]);
        }
      }
      offers.clear();
      merger.merge();
      assertThat(offers).as("offers in a merge, exact %s", exact).isNotEmpty().allMatch(offer -> offer.precision() == Offer.Precision.FLOAT32);
    }
  }

  @Test
  void leaksNoArrays() {
    try (NDManager probe = NDManager.newBaseManager()) {
      NDManager system = probe.getParentManager();
      int before = system.getManagedArrays().size();
      int[] aliveDuringTheMerge = {0};
      MergeAlgorithm dense =
          algorithm(
            "dense",
            Requirements.none().withReRanking(),
            module -> {
              LoraModule first = module.inputs().get(0).module();
              Shape shape = new Shape(first.outFeatures(), first.down().numel() / first.rank());
              NDArray sum = module.manager().create(module.inputs().get(0).delta(), shape).mul(module.inputs().get(0).weight());
              for (ModuleInput input : module.inputs().subList(1, module.inputs().size())) {
                sum = sum.add(module.manager().create(input.delta(), shape).mul(input.weight()));
              }
              synchronized (aliveDuringTheMerge) {
                aliveDuringTheMerge[0] = Math.max(aliveDuringTheMerge[0], system.getManagedArrays().size() - before);
              }
              return new ModuleUpdate.Dense(sum.toFloatArray(), Math.toIntExact(shape.get(1)));
            });
      LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, 0.5).algorithm(dense).rank(3).merge();
      assertThat(aliveDuringTheMerge[0]).as("arrays the merge had alive at once, seen by the count").isGreaterThanOrEqualTo(4);
      assertThat(system.getManagedArrays().size()).as("arrays alive in the system manager after the merge").isEqualTo(before);
    }
  }

  @Test
  void rejectsAdaptersForDifferentModels() {
    LoraAdapter other =
        LoraAdapter.builder()
            .name("other")
            .add(
                LoraModule.of(
                    TinyLora.KEYS[0], TensorData.ofFloats(new float[8], 2, 4), TensorData.ofFloats(new float[20], 10, 2), 2))
            .build();
    assertThatThrownBy(() -> LoraMerger.builder().add(STYLE, 1).add(other, 1).merge())
        .isInstanceOf(LoraMergeException.class)
        .hasMessage(
            "module 'unet.down_blocks.0.attentions.0.proj_in' updates [10, 12] in adapter 'style' but [10, 4]"
                + " in adapter 'other'; the adapters are for different models");
  }

  /**
   * Float8 LoRA factors are never written: asked for, the builder refuses them saying why; read
   * from float8 inputs (all e4m3fn), the merge writes float32, as for inputs of mixed types,
   * and the exact weighted sum of the inputs' values.
   */
  @Test
  void float8FactorsAreNeverTheOutput() {
    assertThatThrownBy(() -> LoraMerger.builder().dtype(DType.F8_E4M3))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("merged factors can be F64, F32, F16 or BF16, got F8_E4M3 (a LoRA's factors are not written as"
            + " float8: merge in F16 or BF16 and fuse into the float8 base)");
    LoraAdapter.Builder float8 = LoraAdapter.builder().name("float8");
    STYLE.modules().values().forEach(
        module -> float8.add(LoraModule.of(module.key(), module.down().to(DType.F8_E4M3), module.up().to(DType.F8_E4M3), module.alpha())));
    LoraAdapter input = float8.build();
    LoraAdapter merged = LoraMerger.builder().add(input, 0.7).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      LoraModule module = merged.modules().get(key);
      assertThat(List.of(module.down().dtype(), module.up().dtype())).as("%s factor types", key).containsOnly(DType.F32);
      double[] expected = TinyLora.weightedSum(key, new LoraAdapter[] {input}, new double[] {0.7});
      assertThat(TinyLora.relativeError(module.deltaF64(), expected)).as("relative error of %s", key).isLessThan(1e-6);
    }
  }

  @Test
  void catOfFp16AdaptersRoundsEachScaledElementOnceFromFloat32() {
    LoraAdapter style = toFloat16(STYLE);
    LoraAdapter subject = toFloat16(SUBJECT);
    double[] weights = {0.7, -0.3};
    LoraAdapter merged = LoraMerger.builder().add(style, weights[0]).add(subject, weights[1]).merge();
    for (ModuleKey key : TinyLora.KEYS) {
      LoraModule[] inputs = {style.modules().get(key), subject.modules().get(key)};
      LoraModule module = merged.modules().get(key);
      int rows = Math.toIntExact(inputs[0].up().shape()[0]);
      int rank = inputs[0].rank() + inputs[1].rank();
      short[] expectedUp = new short[rows * rank];
      java.io.ByteArrayOutputStream expectedDown = new java.io.ByteArrayOutputStream();
      int column = 0;
      for (int n = 0; n < inputs.length; n++) {
        float[] up = inputs[n].up().toFloatArray();
        float factor = (float) (weights[n] * inputs[n].scale());
        int inputRank = inputs[n].rank();
        for (int row = 0; row < rows; row++) {
          for (int j = 0; j < inputRank; j++) {
            expectedUp[row * rank + column + j] = dev.loramerge.internal.numeric.FloatFormats.toFloat16(up[row * inputRank + j] * factor);
          }
        }
        column += inputRank;
        ByteBuffer down = inputs[n].down().bytes();
        byte[] downBytes = new byte[down.remaining()];
        down.duplicate().get(downBytes);
        expectedDown.writeBytes(downBytes);
      }
      short[] actualUp = new short[rows * rank];
      module.up().bytes().duplicate().order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(actualUp);
      assertThat(module.up().dtype()).as("%s up dtype", key).isEqualTo(DType.F16);
      assertThat(actualUp).as("%s up: each element scaled in float32 and rounded once", key).isEqualTo(expectedUp);
      byte[] actualDown = new byte[module.down().bytes().remaining()];
      module.down().bytes().duplicate().get(actualDown);
      assertThat(actualDown).as("%s down: the inputs' bytes, stacked", key).isEqualTo(expectedDown.toByteArray());
    }
  }

  @Test
  void encodedFactorsMustBeOfTheOfferedTypeAndOnlyWhereOneIsOffered() {
    List<String> offered = new ArrayList<>();
    MergeAlgorithm encodesInFloat32 =
        algorithm(
          "Encoder",
          Requirements.none(),
          module -> {
            synchronized (offered) {
              offered.add(module.offer().encoding().map(DType::safetensorsName).orElse("none"));
            }
            ModuleInput input = module.inputs().get(0);
            return new ModuleUpdate.Encoded(
                TensorData.ofFloats(upValues(input), input.module().outFeatures(), input.module().rank()),
                TensorData.ofFloats(downValues(input), input.module().rank(), input.module().down().numel() / input.module().rank()));
          });
    LoraAdapter merged = LoraMerger.builder().algorithm(encodesInFloat32).add(STYLE, 1).dtype(DType.F32).merge();
    assertThat(offered).as("the type each module's merge offered").containsOnly("F32");
    for (ModuleKey key : TinyLora.KEYS) {
      assertThat(merged.modules().get(key).down().bytes()).as("%s down, written as given", key).isEqualTo(STYLE.modules().get(key).down().to(DType.F32).bytes());
    }
    assertThatThrownBy(() -> LoraMerger.builder().algorithm(encodesInFloat32).add(STYLE, 1).dtype(DType.F16).merge())
        .isInstanceOf(IllegalStateException.class)
        .hasMessageStartingWith("module '")
        .hasMessageContaining("algorithm Encoder{} gave factors of F32 at rank 4, but the merge offered F16 up to rank 4");
    assertThatThrownBy(() -> LoraMerger.builder().algorithm(encodesInFloat32).add(STYLE, 1).rank(2).merge())
        .as("an explicit rank below the inputs' offers no type: the factors are truncated")
        .isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("gave factors of F32 at rank 4, but the merge offered no output type");
  }

  @Test
  void catOfMixedTypesOverManyRowsRoundsEachScaledElementOnceToTheOutputType() {
    // 3000 rows at rank 8 span several of the blocks cat fills its output in; bf16 and float32
    // inputs make every A convert instead of being copied.
    ModuleKey key = TinyLora.KEYS[0];
    java.util.Random random = new java.util.Random(11);
    LoraModule[] inputs = {
      LoraModule.of(key, gaussian(random, DType.BF16, 5, 40), gaussian(random, DType.BF16, 3000, 5), 4),
      LoraModule.of(key, gaussian(random, DType.F32, 3, 40), gaussian(random, DType.F32, 3000, 3), 1.5)
    };
    double[] weights = {0.7, -1.3};
    for (DType output : new DType[] {DType.F16, DType.BF16, DType.F32, DType.F64}) {
      LoraModule merged =
          LoraMerger.builder()
              .add(LoraAdapter.builder().name("a").add(inputs[0]).build(), weights[0])
              .add(LoraAdapter.builder().name("b").add(inputs[1]).build(), weights[1])
              .dtype(output)
              .merge()
              .modules()
              .get(key);
      float[] expectedUp = new float[3000 * 8];
      float[] expectedDown = new float[8 * 40];
      int column = 0;
      for (int n = 0; n < inputs.length; n++) {
        float[] up = inputs[n].up().toFloatArray();
        float factor = (float) (weights[n] * inputs[n].scale());
        int inputRank = inputs[n].rank();
        for (int row = 0; row < 3000; row++) {
          for (int j = 0; j < inputRank; j++) {
            expectedUp[row * 8 + column + j] = up[row * inputRank + j] * factor;
          }
        }
        System.arraycopy(inputs[n].down().toFloatArray(), 0, expectedDown, column * 40, inputRank * 40);
        column += inputRank;
      }
      assertThat(merged.up().dtype()).as("up type").isEqualTo(output);
      assertThat(merged.up().shape()).containsExactly(3000, 8);
      assertThat(merged.down().shape()).containsExactly(8, 40);
      assertThat(roundedOnce(merged.up(), expectedUp)).as("%s up: first element that is not its float32 product rounded once (-1: none)", output).isEqualTo(-1);
      assertThat(roundedOnce(merged.down(), expectedDown)).as("%s down: first element that is not the stacked A rounded once (-1: none)", output).isEqualTo(-1);
    }
  }

  /** The first index where {@code tensor} is not {@code expected} rounded once to its type, or −1. */
  private static int roundedOnce(TensorData tensor, float[] expected) {
    assertThat(tensor.numel()).isEqualTo(expected.length);
    for (int i = 0; i < expected.length; i++) {
      double want = switch (tensor.dtype()) {
        case F16 -> dev.loramerge.internal.numeric.FloatFormats.fromFloat16(dev.loramerge.internal.numeric.FloatFormats.toFloat16(expected[i]));
        case BF16 -> dev.loramerge.internal.numeric.FloatFormats.fromBFloat16(dev.loramerge.internal.numeric.FloatFormats.toBFloat16(expected[i]));
        default -> expected[i];
      };
      if (Double.doubleToLongBits(tensor.getDouble(i)) != Double.doubleToLongBits(want)) {
        return i;
      }
    }
    return -1;
  }

  private static TensorData gaussian(java.util.Random random, DType dtype, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) random.nextGaussian();
    }
    return TensorData.ofFloats(values, dtype, shape);
  }

  private static LoraAdapter toFloat16(LoraAdapter adapter) {
    LoraAdapter.Builder builder = LoraAdapter.builder().name(adapter.name());
    adapter.modules().values().forEach(
        module -> builder.add(LoraModule.of(module.key(), module.down().to(DType.F16), module.up().to(DType.F16), module.alpha())));
    return builder.build();
  }

  private static float[] upValues(ModuleInput input) {
    float[] values = new float[Math.toIntExact(input.module().up().numel())];
    input.readUp(0, values, values.length);
    return values;
  }

  private static float[] downValues(ModuleInput input) {
    float[] values = new float[Math.toIntExact(input.module().down().numel())];
    input.readDown(0, values, values.length);
    return values;
  }
  /**
   * A method named {@code name} (its {@code toString} is {@code name{}}) with no parameters, the
   * given requirements, and {@code merge} as its merge.
   */
  private static MergeAlgorithm algorithm(String name, Requirements requirements, Function<ModuleMerge, ModuleUpdate> merge) {
    return new MergeAlgorithm() {
      @Override
      public String name() {
        return name;
      }

      @Override
      public ImmutableMap<String, Object> parameters() {
        return ImmutableMap.of();
      }

      @Override
      public Requirements requirements() {
        return requirements;
      }

      @Override
      public ModuleUpdate merge(ModuleMerge module) {
        return merge.apply(module);
      }

      @Override
      public String toString() {
        return name + "{}";
      }
    };
  }
}

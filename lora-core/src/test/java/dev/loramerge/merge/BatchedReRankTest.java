package dev.loramerge.merge;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.Component;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.merge.MergeAlgorithm.Requirements;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The device merge's path, forced on the CPU: dense updates of same-shape modules re-ranked in
 * one batch ({@link ModuleMerger#mergeTogether}, {@code RandomizedSvd.truncateBatch}).
 */
class BatchedReRankTest {
  private static final int TARGET = 6;
  /** Three modules of one shape (one batch), one of another, one small enough for the exact SVD. */
  private static final ModuleKey[] KEYS = {
    key("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
    key("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"),
    key("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v"),
    key("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"),
    key("down_blocks.1.attentions.0.proj_in"),
  };
  private static final long[][] SHAPES = {{384, 400}, {384, 400}, {384, 400}, {400, 384}, {12, 10}};
  private static final LoraAdapter STYLE = adapter("style", 8, 1);
  private static final LoraAdapter SUBJECT = adapter("subject", 8, 2);

  /** The weighted sum of the inputs' full updates, as a dense update: a method on full updates. */
  private static final MergeAlgorithm DENSE = new MergeAlgorithm() {
    @Override
    public String name() {
      return "dense_sum";
    }

    @Override
    public ImmutableMap<String, Object> parameters() {
      return ImmutableMap.of();
    }

    @Override
    public Requirements requirements() {
      return Requirements.none().withReRanking();
    }

    @Override
    public ModuleUpdate merge(ModuleMerge module) {
      float[] sum = null;
      for (ModuleInput input : module.inputs()) {
        float[] delta = input.delta();
        sum = sum == null ? new float[delta.length] : sum;
        for (int i = 0; i < delta.length; i++) {
          sum[i] += (float) (input.weight() * delta[i]);
        }
      }
      LoraModule first = module.inputs().get(0).module();
      return new ModuleUpdate.Dense(sum, Math.toIntExact(sum.length / first.outFeatures()));
    }
  };

  @Test
  void batchedReRanksAreAsCloseToTheOptimalTruncationAsOneByOne() {
    LoraAdapter optimal = merger().exactSvd(true).build().merge();
    LoraAdapter oneByOne = merger().batchReRanks(false).build().merge();
    LoraAdapter batched = merger().batchReRanks(true).build().merge();
    double[][] exact = exactSums();
    for (int i = 0; i < KEYS.length; i++) {
      double best = residual(optimal.modules().get(KEYS[i]), exact[i]);
      double batchedResidual = residual(batched.modules().get(KEYS[i]), exact[i]);
      assertThat(batchedResidual / best - 1)
          .as("%s: excess residual of the batched truncation (optimal %s, one by one %s)", KEYS[i], best,
              residual(oneByOne.modules().get(KEYS[i]), exact[i]))
          .isBetween(-1e-6, 0.01);
      assertThat(batched.modules().get(KEYS[i]).rank()).as("rank of %s", KEYS[i]).isEqualTo(TARGET);
    }
    for (int i = 0; i < 4; i++) {
      assertThat(batched.modules().get(KEYS[i]))
          .as("%s re-ranked by the randomized SVD: the batched path (Cholesky-QR, batched products) gives other bits", KEYS[i])
          .isNotEqualTo(oneByOne.modules().get(KEYS[i]));
    }
    assertThat(batched.modules().get(KEYS[4])).as("%s, re-ranked by the exact SVD either way", KEYS[4])
        .isEqualTo(oneByOne.modules().get(KEYS[4]));
  }

  @Test
  void batchedMergesAreReproducibleWhateverTheThreads() {
    LoraAdapter first = merger().batchReRanks(true).threads(1).build().merge();
    LoraAdapter second = merger().batchReRanks(true).threads(3).build().merge();
    for (ModuleKey key : KEYS) {
      assertThat(second.modules().get(key)).as("%s with 3 threads against 1", key).isEqualTo(first.modules().get(key));
    }
  }

  @Test
  void factoredReRanksKeepTheirBytesWhenBatched() {
    // cat at an explicit rank below the inputs' is the factored SVD's truncation, as the svd method's.
    LoraMerger.Builder truncating = LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, -0.5).rank(TARGET);
    LoraAdapter oneByOne = truncating.batchReRanks(false).build().merge();
    LoraAdapter batched = truncating.batchReRanks(true).build().merge();
    for (ModuleKey key : KEYS) {
      assertThat(batched.modules().get(key)).as("%s", key).isEqualTo(oneByOne.modules().get(key));
    }
  }

  @Test
  void leaksNoArrays() {
    try (NDManager probe = NDManager.newBaseManager()) {
      NDManager system = probe.getParentManager();
      int before = system.getManagedArrays().size();
      merger().batchReRanks(true).build().merge();
      assertThat(system.getManagedArrays().size()).as("arrays alive in the system manager after a batched merge").isEqualTo(before);
    }
  }

  private static LoraMerger.Builder merger() {
    return LoraMerger.builder().add(STYLE, 0.7).add(SUBJECT, -0.5).algorithm(DENSE).rank(TARGET);
  }

  private static double[][] exactSums() {
    double[][] sums = new double[KEYS.length][];
    for (int i = 0; i < KEYS.length; i++) {
      double[] style = STYLE.modules().get(KEYS[i]).deltaF64();
      double[] subject = SUBJECT.modules().get(KEYS[i]).deltaF64();
      sums[i] = new double[style.length];
      for (int j = 0; j < style.length; j++) {
        sums[i][j] = 0.7 * style[j] - 0.5 * subject[j];
      }
    }
    return sums;
  }

  private static double residual(LoraModule module, double[] exact) {
    double[] delta = module.deltaF64();
    double sum = 0;
    for (int i = 0; i < delta.length; i++) {
      sum += (delta[i] - exact[i]) * (delta[i] - exact[i]);
    }
    return Math.sqrt(sum);
  }

  /** Modules of {@link #SHAPES} whose updates have decaying spectra plus noise, as merged LoRAs do. */
  private static LoraAdapter adapter(String name, int rank, long seed) {
    Random random = new Random(seed);
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(name);
    for (int i = 0; i < KEYS.length; i++) {
      long out = SHAPES[i][0];
      long in = SHAPES[i][1];
      float[] down = new float[Math.toIntExact(rank * in)];
      float[] up = new float[Math.toIntExact(out * rank)];
      for (int j = 0; j < down.length; j++) {
        down[j] = (float) (random.nextGaussian() * Math.pow(0.7, j / in));
      }
      for (int j = 0; j < up.length; j++) {
        up[j] = (float) (random.nextGaussian() * 0.01);
      }
      adapter.add(LoraModule.of(KEYS[i], TensorData.ofFloats(down, rank, in), TensorData.ofFloats(up, out, rank), rank));
    }
    return adapter.build();
  }

  private static ModuleKey key(String path) {
    return ModuleKey.of(Component.UNET, path);
  }
}

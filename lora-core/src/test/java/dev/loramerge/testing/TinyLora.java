package dev.loramerge.testing;

import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import java.util.Random;

/** Small seeded adapters with real SD module names, built in code. */
public final class TinyLora {
  private TinyLora() {}

  /** The module keys every tiny adapter uses: two linear layers and one 3×3 convolution. */
  public static final ModuleKey[] KEYS = {
    ModuleKey.of(Component.UNET, "down_blocks.0.attentions.0.proj_in"),
    ModuleKey.of(Component.UNET, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),
    ModuleKey.of(Component.UNET, "down_blocks.0.resnets.0.conv1"),
  };

  /** An adapter of {@code rank} and {@code alpha} with Gaussian factors from {@code seed}. */
  public static LoraAdapter adapter(String name, int rank, double alpha, long seed) {
    Random random = new Random(seed);
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(name);
    adapter.add(LoraModule.of(KEYS[0], gaussian(random, rank, 12), gaussian(random, 10, rank), alpha));
    adapter.add(LoraModule.of(KEYS[1], gaussian(random, rank, 12), gaussian(random, 12, rank), alpha));
    adapter.add(LoraModule.of(KEYS[2], gaussian(random, rank, 4, 3, 3), gaussian(random, 6, rank, 1, 1), alpha));
    return adapter.build();
  }

  /**
   * Base weights for the {@link #KEYS} modules ({@code <path>.weight}, Gaussian with standard
   * deviation 0.1) plus an untouched {@code conv_in.weight}, in {@code dtype}.
   */
  public static java.util.Map<String, TensorData> base(DType dtype, long seed) {
    Random random = new Random(seed);
    java.util.Map<String, TensorData> weights = new java.util.LinkedHashMap<>();
    LoraAdapter shapes = adapter("shapes", 1, 1, seed);
    weights.put("conv_in.weight", scaled(random, dtype, 4, 4, 3, 3));
    for (ModuleKey key : KEYS) {
      weights.put(key.path() + ".weight", scaled(random, dtype, shapes.modules().get(key).weightShape()));
    }
    return weights;
  }

  private static TensorData scaled(Random random, DType dtype, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = 0.1 * random.nextGaussian();
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }

  private static TensorData gaussian(Random random, long... shape) {
    float[] values = new float[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) random.nextGaussian();
    }
    return TensorData.ofFloats(values, shape);
  }

  /** Σ wᵢ·sᵢ·BᵢAᵢ for one module, computed in float64 from the factors' values. */
  public static double[] weightedSum(ModuleKey key, LoraAdapter[] adapters, double[] weights) {
    double[] sum = null;
    for (int i = 0; i < adapters.length; i++) {
      LoraModule module = adapters[i].modules().get(key);
      if (module == null) {
        continue;
      }
      double[] a = module.down().toDoubleArray();
      double[] b = module.up().toDoubleArray();
      int rank = module.rank();
      int out = Math.toIntExact(module.outFeatures());
      int inner = a.length / rank;
      if (sum == null) {
        sum = new double[out * inner];
      }
      for (int o = 0; o < out; o++) {
        for (int j = 0; j < inner; j++) {
          double dot = 0;
          for (int p = 0; p < rank; p++) {
            dot += b[o * rank + p] * a[p * inner + j];
          }
          sum[o * inner + j] += weights[i] * module.scale() * dot;
        }
      }
    }
    return sum;
  }

  /** ‖actual − expected‖ / ‖expected‖. */
  public static double relativeError(double[] actual, double[] expected) {
    double difference = 0;
    double norm = 0;
    for (int i = 0; i < expected.length; i++) {
      difference += (actual[i] - expected[i]) * (actual[i] - expected[i]);
      norm += expected[i] * expected[i];
    }
    return Math.sqrt(difference / norm);
  }
}

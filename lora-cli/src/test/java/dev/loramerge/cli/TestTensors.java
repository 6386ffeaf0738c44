package dev.loramerge.cli;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import java.util.Random;

/** Seeded tensors the command tests share. */
final class TestTensors {
  private TestTensors() {}

  /** Gaussian values × 0.05 from {@code random}, rounded once to bf16. */
  static TensorData gaussian(Random random, long... shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = random.nextGaussian() * 0.05;
    }
    return TensorData.ofDoubles(values, DType.BF16, shape);
  }
}

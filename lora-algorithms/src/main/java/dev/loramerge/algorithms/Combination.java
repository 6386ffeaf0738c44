package dev.loramerge.algorithms;

import dev.loramerge.algorithms.internal.TaskTensors;
import dev.loramerge.merge.spi.TaskArithmetic;

/** How the pruned task tensors are combined into one. */
sealed interface Combination {
  /**
   * The combination of {@code tensors}, each cut at {@code cuts[i]} as it is read (see {@link
   * Pruning#prune}), in a new array; the tensors may be changed.
   */
  float[] combine(float[][] tensors, double[] weights, float[] cuts);

  /** This combination as {@link TaskArithmetic} names it. */
  TaskArithmetic.Combine described();

  /** Σ λᵢ·Tᵢ. */
  record Sum() implements Combination {
    @Override
    public float[] combine(float[][] tensors, double[] weights, float[] cuts) {
      return TaskTensors.weightedSum(tensors, weights, cuts);
    }

    @Override
    public TaskArithmetic.Combine described() {
      return TaskArithmetic.Combine.SUM;
    }
  }

  /** TIES' sign election per entry and the disjoint mean of the agreeing weighted entries. */
  record ElectedSign(MajoritySign majoritySign) implements Combination {
    @Override
    public float[] combine(float[][] tensors, double[] weights, float[] cuts) {
      return TaskTensors.electAndMerge(tensors, weights, majoritySign, cuts);
    }

    @Override
    public TaskArithmetic.Combine described() {
      return majoritySign == MajoritySign.TOTAL ? TaskArithmetic.Combine.TOTAL_SIGN : TaskArithmetic.Combine.FREQUENCY_SIGN;
    }
  }
}

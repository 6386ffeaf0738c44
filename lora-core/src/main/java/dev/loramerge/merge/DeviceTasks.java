package dev.loramerge.merge;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.internal.fuse.TaskKernels;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.TaskArithmetic;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The merged dense updates of a run of same-shape modules made on a GPU by the method's {@link
 * TaskArithmetic} from the inputs' factors ({@link TaskKernels}), for the batched randomized SVD
 * that follows on the same device: the factors go up in one copy instead of every module's m×n
 * update, and the products, pruning and combination take the device's bandwidth instead of the
 * host's, with the host's bits.
 */
final class DeviceTasks {
  private DeviceTasks() {}

  /**
   * {@code members}' merged updates, members×rows×cols float32 in {@code scope}, or empty where the
   * kernels cannot address the arrays (the members are then merged on the host). Every input
   * must be a LoRA, read through its factors.
   */
  static Optional<NDArray> merged(
      NDManager scope, DenseBuffers buffers, TaskArithmetic arithmetic, List<? extends ModuleMerge> members, int rows, int cols) {
    List<TaskKernels.Slot> slots = new ArrayList<>();
    for (int member = 0; member < members.size(); member++) {
      ModuleMerge module = members.get(member);
      for (ModuleInput input : module.inputs()) {
        int rank = input.module().rank();
        float[] up = new float[Math.multiplyExact(rows, rank)];
        float[] down = new float[Math.multiplyExact(rank, cols)];
        input.readUp(0, up, up.length);
        input.readDown(0, down, down.length);
        boolean random = arithmetic.prune() == TaskArithmetic.Prune.RANDOM || arithmetic.prune() == TaskArithmetic.Prune.RANKED;
        long seed = random ? module.streamSeed(arithmetic.seed(), input.index(), TaskArithmetic.STREAM) : 0;
        slots.add(new TaskKernels.Slot(member, up, down, rank, (float) input.scale(), input.weight(), seed));
      }
    }
    NDArray out = scope.create(new Shape(members.size(), rows, cols), DataType.FLOAT32);
    ByteBuffer host = buffers.take(TaskKernels.hostBytes(slots, members.size()));
    try {
      return TaskKernels.merge(scope, host, slots, members.size(), rows, cols, arithmetic, out) ? Optional.of(out) : Optional.empty();
    } finally {
      buffers.give(host);
    }
  }
}

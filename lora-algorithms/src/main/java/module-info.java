/** Every named LoRA merge method. */
module dev.loramerge.algorithms {
  requires transitive dev.loramerge.core;
  // Optional at run time, as in dev.loramerge.core.
  requires static jdk.incubator.vector;

  exports dev.loramerge.algorithms;
  // TaskTensors is public only for lora-bench's kernels.
  exports dev.loramerge.algorithms.internal to dev.loramerge.bench;
}

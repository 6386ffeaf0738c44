/**
 * Fusing a merger's update into base weights: {@link dev.loramerge.fuse.LoraFuser}, the weights
 * it writes ({@link dev.loramerge.fuse.WeightTarget}: arrays in memory here, files in {@code
 * dev.loramerge.io}), what it did ({@link dev.loramerge.fuse.FuseReport}) and the way back ({@link
 * dev.loramerge.fuse.FusedLora}).
 */
package dev.loramerge.fuse;

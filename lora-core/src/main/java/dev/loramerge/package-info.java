/**
 * The LoRA model: adapters ({@link dev.loramerge.LoraAdapter}), their modules ({@link
 * dev.loramerge.LoraModule}) keyed by {@link dev.loramerge.ModuleKey}, and tensors ({@link
 * dev.loramerge.TensorData}). Architectures are in {@link dev.loramerge.arch}, merging in {@link
 * dev.loramerge.merge}, fusing into base weights in {@link dev.loramerge.fuse}.
 */
package dev.loramerge;

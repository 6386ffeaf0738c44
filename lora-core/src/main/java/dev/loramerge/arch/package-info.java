/**
 * The architecture catalogue: the models adapters are made for ({@link
 * dev.loramerge.arch.Architecture}), their modules ({@link dev.loramerge.arch.ModuleSpec}) and
 * LoRA block weights ({@link dev.loramerge.arch.BlockWeights}).
 */
package dev.loramerge.arch;

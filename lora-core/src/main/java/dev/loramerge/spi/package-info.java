/**
 * What a {@link dev.loramerge.MergeAlgorithm} sees of one module ({@link
 * dev.loramerge.spi.ModuleMerge}, {@link dev.loramerge.spi.ModuleInput}) and what it returns
 * ({@link dev.loramerge.spi.ModuleUpdate}). Arrays are float32 DJL NDArrays owned by the
 * module's manager; factors are 2-D (a convolution's A is flattened to r×(in·k·k)).
 */
package dev.loramerge.spi;

/**
 * What a {@link dev.loramerge.merge.MergeAlgorithm} sees of one module ({@link
 * dev.loramerge.merge.spi.ModuleMerge}, {@link dev.loramerge.merge.spi.ModuleInput}) and what it returns
 * ({@link dev.loramerge.merge.spi.ModuleUpdate}). Arrays are float32 DJL NDArrays owned by the
 * module's manager; factors are 2-D (a convolution's A is flattened to r×(in·k·k)). Methods that
 * work element by element can take the factors as float32 values instead ({@link
 * dev.loramerge.merge.spi.ModuleInput#downValues()}) and return values ({@link
 * dev.loramerge.merge.spi.ModuleUpdate#factored(float[], float[], int)}): the merger then rounds them in
 * Java, and a merge that makes no array never starts the engine. Where the merger will write
 * the factors as they are ({@link dev.loramerge.merge.spi.ModuleMerge#outputType()}), a method can read
 * its inputs a block at a time ({@link dev.loramerge.merge.spi.ModuleInput#readUp}) and return the
 * factors already in the output type ({@link dev.loramerge.merge.spi.ModuleUpdate#encoded}), with no
 * float32 copy of the whole module: cat and linear do. Methods on full updates take
 * them as values too ({@link dev.loramerge.merge.spi.ModuleInput#deltaValues()}, computed in Java with
 * the Vector API when the JVM has it) and return {@link
 * dev.loramerge.merge.spi.ModuleUpdate#dense(float[], int)}.
 */
package dev.loramerge.merge.spi;

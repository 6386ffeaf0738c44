/**
 * What a {@link dev.loramerge.merge.MergeAlgorithm} sees of one module and what it returns.
 *
 * <p>{@link dev.loramerge.merge.spi.ModuleMerge} holds the module's {@link
 * dev.loramerge.merge.spi.ModuleInput}s and the merger's {@link dev.loramerge.merge.spi.Offer}.
 * An input's factors are read a block at a time, in float32 or float64 as the array read into
 * says, or as the full update s·B·A in float32; an algorithm returns one {@link
 * dev.loramerge.merge.spi.ModuleUpdate}: factors in float32, factors in float64, factors already
 * encoded in the output type, or a dense update the merger re-ranks. The offer says which forms
 * save work: where the merger will write the factors as they are it offers their type, and a
 * method that reads a block at a time can encode each block as it is done, with no float32 copy
 * of the module (cat and linear do); in a fuse with a method exact in float64 it offers float64.
 *
 * <p>Element-wise work on Java arrays is rounded and written by the merger in Java, so a merge
 * that makes no DJL array never starts the engine.
 */
package dev.loramerge.merge.spi;

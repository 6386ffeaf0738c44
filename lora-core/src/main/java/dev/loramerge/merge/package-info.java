/**
 * Merging adapters into one: {@link dev.loramerge.merge.LoraMerger}, the methods' interface
 * {@link dev.loramerge.merge.MergeAlgorithm} (implementations in {@code dev.loramerge.algorithms},
 * their view of a module in {@link dev.loramerge.merge.spi}), and how results are re-ranked
 * ({@link dev.loramerge.merge.RankPolicy}) and pruned ({@link dev.loramerge.merge.PostPrune}).
 */
package dev.loramerge.merge;

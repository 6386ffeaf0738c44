/**
 * Every named merge method, each a small immutable record implementing {@link
 * dev.loramerge.merge.MergeAlgorithm} whose {@code toString()} names every parameter: {@link
 * dev.loramerge.algorithms.Cat}, {@link dev.loramerge.algorithms.Linear}, {@link
 * dev.loramerge.algorithms.Svd}, {@link dev.loramerge.algorithms.AddDifference}, and the
 * element-wise methods {@link dev.loramerge.algorithms.Ties}, {@link
 * dev.loramerge.algorithms.DareLinear}, {@link dev.loramerge.algorithms.DareTies}, {@link
 * dev.loramerge.algorithms.MagnitudePrune}, {@link dev.loramerge.algorithms.Breadcrumbs} and
 * {@link dev.loramerge.algorithms.Della}. The element-wise methods are built from the same parts:
 * how each task tensor is pruned (by magnitude, at random, outliers and all, by magnitude rank),
 * how the tensors are combined (a weighted sum, or TIES' elected signs), and the {@link
 * dev.loramerge.algorithms.Space} they work in: PEFT's {@code *_svd} types are the same methods
 * {@code onUpdates()}. {@link dev.loramerge.algorithms.Dare} is the drop-rate spelling the guides
 * use; {@link dev.loramerge.algorithms.MergeMethod} lists every method by the name users type.
 */
package dev.loramerge.algorithms;

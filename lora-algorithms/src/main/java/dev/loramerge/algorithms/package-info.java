/**
 * Every named merge method: PEFT's eleven combination types ({@link
 * dev.loramerge.algorithms.Cat}, {@link dev.loramerge.algorithms.Linear}, {@link
 * dev.loramerge.algorithms.Svd}, {@link dev.loramerge.algorithms.Ties}, {@link
 * dev.loramerge.algorithms.TiesSvd}, {@link dev.loramerge.algorithms.DareLinear}, {@link
 * dev.loramerge.algorithms.DareTies}, {@link dev.loramerge.algorithms.DareLinearSvd}, {@link
 * dev.loramerge.algorithms.DareTiesSvd}, {@link dev.loramerge.algorithms.MagnitudePrune}, {@link
 * dev.loramerge.algorithms.MagnitudePruneSvd}) and {@link dev.loramerge.algorithms.Dare}, the
 * drop-rate spelling the guides use. Each is a small immutable {@link
 * dev.loramerge.merge.MergeAlgorithm} whose {@code toString()} names every parameter.
 */
package dev.loramerge.algorithms;

/**
 * The element-wise loops the merge methods of {@link dev.loramerge.algorithms} share, public so
 * that lora-bench can measure them, and exported to {@code dev.loramerge.bench} alone. Not an
 * API: the merge methods are.
 */
package dev.loramerge.algorithms.internal;

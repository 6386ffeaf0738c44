/**
 * The fusing kernels: W + ΔW computed in float64 and rounded once to the weight's type; and, in
 * the same CUDA library, the merges' task arithmetic on a GPU ({@link
 * dev.loramerge.internal.fuse.TaskKernels}). Not an API: exported only to the loramerge modules
 * that use it (see module-info).
 */
package dev.loramerge.internal.fuse;

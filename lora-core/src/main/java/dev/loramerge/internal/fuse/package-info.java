/** The fusing kernels: W + ΔW computed in float64 and rounded once to the weight's type. Not an API. */
package dev.loramerge.internal.fuse;

/** The fusing kernels: W + ΔW computed in float64 and rounded once to the weight's type. Not an API: exported only to the loramerge modules that use it (see module-info). */
package dev.loramerge.internal.fuse;

/** Linear algebra kernels: factored and randomized SVDs, low-rank products, random streams. Not an API: exported only to the loramerge modules that use it (see module-info). */
package dev.loramerge.internal.linalg;

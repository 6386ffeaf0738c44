/** Linear algebra kernels: factored and randomized SVDs, low-rank products, random streams. Not an API. */
package dev.loramerge.internal.linalg;

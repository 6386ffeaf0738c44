/**
 * Synthetic adapters of a real architecture's shapes, for demos, benchmarks and tests that need
 * adapters without downloading any. Not for producing real models.
 */
package dev.loramerge.synthetic;

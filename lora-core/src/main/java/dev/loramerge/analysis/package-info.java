/** Measures of LoRA updates computed from their factors, for inspecting and comparing adapters. */
package dev.loramerge.analysis;

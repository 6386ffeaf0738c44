/** Float formats: fp16 and bf16 encoding and decoding, rounded once. Not an API. */
package dev.loramerge.internal.numeric;

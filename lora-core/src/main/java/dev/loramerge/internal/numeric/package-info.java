/** Float formats: fp16 and bf16 encoding and decoding, rounded once. Not an API: exported only to the loramerge modules that use it (see module-info). */
package dev.loramerge.internal.numeric;

/**
 * Reading and writing LoRA adapters and model weights on disk. {@link
 * dev.loramerge.io.SafetensorsFile} opens a safetensors file, validating its header exactly as the
 * reference implementation does and memory-mapping each tensor on demand; {@link
 * dev.loramerge.io.SafetensorsWriter} and {@link dev.loramerge.io.Safetensors} write one through a
 * temporary file renamed into place, in the reference writer's layout; malformed bytes are a {@link
 * dev.loramerge.io.SafetensorsFormatException}. The adapter formats (PEFT, kohya, diffusers) are
 * read and written on top of them.
 */
package dev.loramerge.io;

package dev.loramerge.io;

import java.io.IOException;
import java.util.Locale;

/**
 * The bytes of a file are not a valid safetensors file: the header length, header encoding, header
 * JSON, a tensor entry or the data layout breaks a rule of the format as the reference
 * implementation ({@code huggingface/safetensors}) defines it.
 *
 * <p>The message is one line: the file name, the tensor where there is one, and what was found
 * against what was expected, e.g. {@code "style.safetensors: tensor 'x.lora_down.weight'
 * data_offsets [0, 1000) hold 1000 bytes but F16 [4, 320] needs 2560 bytes"}.
 */
public class SafetensorsFormatException extends IOException {
  private static final long serialVersionUID = 1L;

  /** An exception with a complete, one-line message. */
  public SafetensorsFormatException(String message) {
    super(message);
  }

  /** An exception with a complete, one-line message and the failure behind it. */
  public SafetensorsFormatException(String message, Throwable cause) {
    super(message, cause);
  }

  /** {@code "<fileName>: <formatted detail>"}, formatted with {@link Locale#ROOT}. */
  static SafetensorsFormatException of(String fileName, String format, Object... args) {
    return new SafetensorsFormatException(
        fileName + ": " + String.format(Locale.ROOT, format, args));
  }
}

package dev.loramerge.cli;

import dev.loramerge.io.LoraFormat;
import java.util.Optional;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** Reads {@code peft}, {@code kohya} or {@code diffusers}: the formats that are written. */
final class FormatConverter implements ITypeConverter<LoraFormat> {
  @Override
  public LoraFormat convert(String value) {
    Optional<LoraFormat> format = LoraFormat.fromCliName(value);
    if (format.isPresent() && !format.get().writable()) {
      throw new TypeConversionException("'" + value + "' is a layout that is read, not written; expected peft, kohya or diffusers");
    }
    return format.orElseThrow(
        () -> new TypeConversionException("'" + value + "' is not a format; expected peft, kohya or diffusers"));
  }
}

package dev.loramerge.cli;

import dev.loramerge.io.LoraFormat;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** Reads {@code peft}, {@code kohya} or {@code diffusers}. */
final class FormatConverter implements ITypeConverter<LoraFormat> {
  @Override
  public LoraFormat convert(String value) {
    return LoraFormat.fromCliName(value)
        .orElseThrow(
            () ->
                new TypeConversionException(
                    "'" + value + "' is not a format; expected peft, kohya or diffusers"));
  }
}

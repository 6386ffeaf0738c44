package dev.loramerge.cli;

import java.nio.file.Path;
import java.util.Locale;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** {@code INPUT=WEIGHT} on the command line; a bare {@code INPUT} has weight 1. */
record WeightedInput(Path path, double weight) {
  /** Splits at the last '=' when what follows is a number. */
  static final class Converter implements ITypeConverter<WeightedInput> {
    @Override
    public WeightedInput convert(String value) {
      int equals = value.lastIndexOf('=');
      if (equals < 0) {
        return new WeightedInput(Path.of(value), 1.0);
      }
      String weight = value.substring(equals + 1);
      try {
        double parsed = Double.parseDouble(weight);
        if (!Double.isFinite(parsed)) {
          throw new TypeConversionException("weight '" + weight + "' of '" + value + "' is not a finite number");
        }
        return new WeightedInput(Path.of(value.substring(0, equals)), parsed);
      } catch (NumberFormatException e) {
        throw new TypeConversionException(
            String.format(Locale.ROOT, "'%s' is not INPUT=WEIGHT: '%s' is not a number", value, weight));
      }
    }
  }

  /** {@code name=weight} for file names: the weight without a trailing ".0". */
  String weightText() {
    return weight == Math.rint(weight) && Math.abs(weight) < 1e9
        ? Long.toString((long) weight)
        : Double.toString(weight);
  }
}

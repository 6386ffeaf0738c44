package dev.loramerge.internal.arch;

import com.google.common.collect.ImmutableList;
import dev.loramerge.internal.json.Json;
import java.io.IOException;
import java.math.BigDecimal;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * A published {@code config.json} (diffusers or transformers), read into typed values. Every
 * accessor names the file and the key when a value is missing or of the wrong type, so a bad
 * config fails with a message that says where to look.
 */
final class ModelConfig {
  private final String source;
  private final Map<String, Object> values;

  private ModelConfig(String source, Map<String, Object> values) {
    this.source = source;
    this.values = values;
  }

  /**
   * Parses {@code json}; {@code source} names it in error messages.
   *
   * @throws IOException when the text is not a JSON object
   */
  static ModelConfig parse(String source, String json) throws IOException {
    try {
      return new ModelConfig(source, Json.parseObject(json));
    } catch (IOException e) {
      throw new IOException(source + ": " + e.getMessage(), e);
    }
  }

  /** Where the config came from, for messages. */
  String source() {
    return source;
  }

  /**
   * The class the config builds: diffusers writes {@code _class_name}, transformers a
   * one-element {@code architectures} list.
   */
  String modelClass() {
    if (isSet("_class_name")) {
      return string("_class_name");
    }
    ImmutableList<String> architectures = strings("architectures");
    if (architectures.size() != 1) {
      throw invalid("architectures", values.get("architectures"), "a list of one class name");
    }
    return architectures.get(0);
  }

  /** A required string. */
  String string(String key) {
    Object value = required(key);
    if (!(value instanceof String)) {
      throw invalid(key, value, "a string");
    }
    return (String) value;
  }

  /** A string, or {@code fallback} when the key is absent or null. */
  String string(String key, String fallback) {
    return isSet(key) ? string(key) : fallback;
  }

  /** A required list of strings. */
  ImmutableList<String> strings(String key) {
    Object value = required(key);
    if (!(value instanceof List)) {
      throw invalid(key, value, "a list of strings");
    }
    ImmutableList.Builder<String> result = ImmutableList.builder();
    for (Object element : (List<?>) value) {
      if (!(element instanceof String)) {
        throw invalid(key, value, "a list of strings");
      }
      result.add((String) element);
    }
    return result.build();
  }

  /** A required positive integer. */
  int positive(String key) {
    return positiveValue(key, required(key));
  }

  /** A positive integer, or {@code fallback} when the key is absent or null. */
  int positive(String key, int fallback) {
    return isSet(key) ? positive(key) : fallback;
  }

  /** A required, non-empty list of positive integers. */
  ImmutableList<Integer> positives(String key) {
    Object value = required(key);
    if (!(value instanceof List) || ((List<?>) value).isEmpty()) {
      throw invalid(key, value, "a list of positive integers");
    }
    ImmutableList.Builder<Integer> result = ImmutableList.builder();
    for (Object element : (List<?>) value) {
      result.add(positiveValue(key, element));
    }
    return result.build();
  }

  /** A list of non-negative integers (block indices); empty when the key is absent or null. */
  ImmutableList<Integer> indices(String key) {
    if (!isSet(key)) {
      return ImmutableList.of();
    }
    Object value = values.get(key);
    if (!(value instanceof List)) {
      throw invalid(key, value, "a list of block indices");
    }
    ImmutableList.Builder<Integer> result = ImmutableList.builder();
    for (Object element : (List<?>) value) {
      if (!(element instanceof BigDecimal) || ((BigDecimal) element).signum() < 0) {
        throw invalid(key, value, "a list of block indices");
      }
      try {
        result.add(((BigDecimal) element).intValueExact());
      } catch (ArithmeticException e) {
        throw invalid(key, value, "a list of block indices");
      }
    }
    return result.build();
  }

  /** A boolean, or {@code fallback} when the key is absent or null. */
  boolean bool(String key, boolean fallback) {
    if (!isSet(key)) {
      return fallback;
    }
    Object value = values.get(key);
    if (!(value instanceof Boolean)) {
      throw invalid(key, value, "true or false");
    }
    return (Boolean) value;
  }

  /**
   * A per-block positive integer: diffusers accepts one number for every block or a list with
   * one number per block.
   */
  ImmutableList<Integer> perBlock(String key, int blocks) {
    Object value = required(key);
    if (!(value instanceof List)) {
      return ImmutableList.copyOf(Collections.nCopies(blocks, positiveValue(key, value)));
    }
    List<?> list = (List<?>) value;
    if (list.size() != blocks) {
      throw invalid(key, value, "one number, or a list of " + blocks + " (one per block)");
    }
    ImmutableList.Builder<Integer> result = ImmutableList.builder();
    for (Object element : list) {
      result.add(positiveValue(key, element));
    }
    return result.build();
  }

  /** A per-block positive integer, {@code fallback} for every block when the key is absent or null. */
  ImmutableList<Integer> perBlock(String key, int blocks, int fallback) {
    return isSet(key) ? perBlock(key, blocks) : ImmutableList.copyOf(Collections.nCopies(blocks, fallback));
  }

  /**
   * Refuses a config that sets {@code key} to anything but its default: the option changes the
   * layers in a way the walk does not model, and ignoring it would give wrong shapes.
   *
   * @param defaults the values that leave the layers as modelled; absent and null always do
   */
  void requireDefault(String key, Object... defaults) {
    if (!isSet(key)) {
      return;
    }
    Object value = values.get(key);
    for (Object accepted : defaults) {
      if (sameValue(accepted, value)) {
        return;
      }
    }
    throw new IllegalArgumentException(
        String.format(
            Locale.ROOT,
            "%s: '%s' is %s, which changes the model's layers in a way this walk does not"
                + " model; supported: %s",
            source,
            key,
            Json.describe(value),
            defaults.length == 0 ? "null" : Arrays.toString(defaults)));
  }

  private static boolean sameValue(Object accepted, Object value) {
    if (accepted instanceof Number && value instanceof BigDecimal) {
      return new BigDecimal(accepted.toString()).compareTo((BigDecimal) value) == 0;
    }
    return Objects.equals(accepted, value);
  }

  /** Whether {@code key} is present with a non-null value. */
  boolean isSet(String key) {
    return values.get(key) != null;
  }

  private Object required(String key) {
    Object value = values.get(key);
    if (value == null) {
      throw new IllegalArgumentException(source + ": '" + key + "' is missing");
    }
    return value;
  }

  private int positiveValue(String key, Object value) {
    if (value instanceof BigDecimal) {
      try {
        int number = ((BigDecimal) value).intValueExact();
        if (number > 0) {
          return number;
        }
      } catch (ArithmeticException e) {
        // Not an int: falls through to the message below.
      }
    }
    throw invalid(key, value, "a positive integer");
  }

  private IllegalArgumentException invalid(String key, Object value, String expected) {
    return new IllegalArgumentException(
        source + ": '" + key + "' is " + Json.describe(value) + ", expected " + expected);
  }
}

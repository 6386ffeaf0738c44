package dev.loramerge.io;

import static com.fasterxml.jackson.core.JsonToken.END_ARRAY;
import static com.fasterxml.jackson.core.JsonToken.FIELD_NAME;
import static com.fasterxml.jackson.core.JsonToken.START_ARRAY;
import static com.fasterxml.jackson.core.JsonToken.START_OBJECT;
import static com.fasterxml.jackson.core.JsonToken.VALUE_NULL;
import static com.fasterxml.jackson.core.JsonToken.VALUE_NUMBER_INT;
import static com.fasterxml.jackson.core.JsonToken.VALUE_STRING;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.google.common.primitives.Longs;
import dev.loramerge.DType;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * Walks the JSON tokens of one safetensors header, checking each value's type as it goes: the
 * JSON half of {@link SafetensorsHeader#read}, which then checks the layout the entries describe.
 * Every message names the rule the header breaks, as the reference reader's {@code serde}
 * deserialization would reject it, plus the three ambiguities the reference resolves silently
 * (duplicate names, duplicate metadata keys, unknown entry fields).
 *
 * <p>One instance reads one header, from one thread.
 */
final class HeaderParser {
  private static final String KNOWN_DTYPES =
      Arrays.stream(DType.values()).map(DType::safetensorsName).collect(Collectors.joining(", "));

  /** A tensor entry as the JSON gave it, before the layout is checked. */
  record Entry(String name, DType dtype, long[] shape, long begin, long end) {}

  private final String fileName;
  private final Map<String, String> metadata = new LinkedHashMap<>();
  private final Map<String, Entry> entries = new LinkedHashMap<>();
  private final JsonParser json;
  private boolean sawMetadata;

  HeaderParser(String fileName, JsonParser json) {
    this.fileName = fileName;
    this.json = json;
  }

  void parse() throws IOException {
    JsonToken root = json.nextToken();
    if (root == null) {
      throw error("header holds no JSON value, expected an object");
    }
    if (root != START_OBJECT) {
      throw error("header is %s, expected a JSON object", describe(root));
    }
    while (json.nextToken() == FIELD_NAME) {
      String name = name();
      JsonToken value = json.nextToken();
      if (name.equals(SafetensorsHeader.METADATA)) {
        if (sawMetadata) {
          throw error("header holds '%s' twice", SafetensorsHeader.METADATA);
        }
        sawMetadata = true;
        readMetadata(value);
      } else {
        if (entries.containsKey(name)) {
          throw error("header holds tensor '%s' twice", name);
        }
        entries.put(name, readEntry(name, value));
      }
    }
    // serde_json allows trailing whitespace only; Jackson would go on to read another value.
    if (json.nextToken() != null) {
      throw error("header continues after its JSON object at %s", position());
    }
  }

  /** The {@code __metadata__} map as read, in header order. */
  Map<String, String> metadata() {
    return metadata;
  }

  /** The tensor entries as read, in header order, their layout not yet checked. */
  Collection<Entry> entries() {
    return entries.values();
  }

  private void readMetadata(JsonToken token) throws IOException {
    // serde reads null as an absent Option: the reference takes it for "no metadata".
    if (token == VALUE_NULL) {
      return;
    }
    if (token != START_OBJECT) {
      throw error("'%s' is %s, expected an object of strings", SafetensorsHeader.METADATA, describe(token));
    }
    while (json.nextToken() == FIELD_NAME) {
      String key = name();
      JsonToken value = json.nextToken();
      if (value != VALUE_STRING) {
        throw error(
            "'%s' value for key '%s' is %s, expected a string", SafetensorsHeader.METADATA, key, describe(value));
      }
      if (metadata.put(key, string()) != null) {
        throw error("'%s' holds key '%s' twice", SafetensorsHeader.METADATA, key);
      }
    }
  }

  private Entry readEntry(String name, JsonToken token) throws IOException {
    if (token != START_OBJECT) {
      throw error(
          "tensor '%s' is %s, expected an object with dtype, shape and data_offsets",
          name, describe(token));
    }
    DType dtype = null;
    long[] shape = null;
    long[] offsets = null;
    while (json.nextToken() == FIELD_NAME) {
      String field = json.currentName();
      JsonToken value = json.nextToken();
      switch (field) {
        case "dtype" -> {
          rejectRepeat(name, field, dtype);
          dtype = readDtype(name, value);
        }
        case "shape" -> {
          rejectRepeat(name, field, shape);
          shape = readIntegers(name, field, value, "an array of non-negative integers");
        }
        case "data_offsets" -> {
          rejectRepeat(name, field, offsets);
          offsets = readIntegers(name, field, value, "an array [begin, end]");
          if (offsets.length != 2) {
            throw error(
                "tensor '%s' field 'data_offsets' holds %d values, expected 2 ([begin, end])",
                name, offsets.length);
          }
        }
        default ->
            throw error(
                "tensor '%s' has unknown field '%s', expected only dtype, shape and data_offsets",
                name, field);
      }
    }
    if (dtype == null) {
      throw missing(name, "dtype");
    }
    if (shape == null) {
      throw missing(name, "shape");
    }
    if (offsets == null) {
      throw missing(name, "data_offsets");
    }
    return new Entry(name, dtype, shape, offsets[0], offsets[1]);
  }

  private DType readDtype(String name, JsonToken token) throws IOException {
    if (token != VALUE_STRING) {
      throw wrongType(name, "dtype", token, "a string");
    }
    String text = json.getText();
    return DType.fromSafetensorsName(text)
        .orElseThrow(
            () ->
                error(
                    "tensor '%s' has dtype '%s', expected one of %s", name, text, KNOWN_DTYPES));
  }

  private long[] readIntegers(String name, String field, JsonToken token, String expected)
      throws IOException {
    if (token != START_ARRAY) {
      throw wrongType(name, field, token, expected);
    }
    List<Long> values = new ArrayList<>();
    for (JsonToken element = json.nextToken(); element != END_ARRAY; element = json.nextToken()) {
      // serde_json reads "-0" as a float, which no usize accepts: the sign alone disqualifies.
      if (element != VALUE_NUMBER_INT
          || json.getText().startsWith("-")
          || json.getNumberType() == JsonParser.NumberType.BIG_INTEGER) {
        throw error(
            "tensor '%s' field '%s' holds %s, expected integers from 0 to %d",
            name,
            field,
            element.isNumeric() ? json.getText() : describe(element),
            Long.MAX_VALUE);
      }
      values.add(json.getLongValue());
    }
    return Longs.toArray(values);
  }

  private void rejectRepeat(String name, String field, Object earlier)
      throws SafetensorsFormatException {
    if (earlier != null) {
      throw error("tensor '%s' holds field '%s' twice", name, field);
    }
  }

  private SafetensorsFormatException missing(String name, String field) {
    return error("tensor '%s' lacks field '%s'", name, field);
  }

  private SafetensorsFormatException wrongType(
      String name, String field, JsonToken token, String expected) {
    return error(
        "tensor '%s' field '%s' is %s, expected %s", name, field, describe(token), expected);
  }

  /** The current field name, which must be valid Unicode. */
  private String name() throws IOException {
    return checkUnicode(json.currentName());
  }

  /** The current string value, which must be valid Unicode. */
  private String string() throws IOException {
    return checkUnicode(json.getText());
  }

  /** Rejects what only a {@code \}{@code uD800}-style escape can produce: a lone surrogate. */
  private String checkUnicode(String text) throws SafetensorsFormatException {
    if (SafetensorsHeader.hasUnpairedSurrogate(text)) {
      throw error("header string at %s holds an unpaired surrogate escape", position());
    }
    return text;
  }

  private String position() {
    JsonLocation at = json.currentTokenLocation();
    return "line " + at.getLineNr() + ", column " + at.getColumnNr();
  }

  private SafetensorsFormatException error(String format, Object... args) {
    return SafetensorsFormatException.of(fileName, format, args);
  }

  /** How a message names the value that starts with {@code token}. */
  private static String describe(JsonToken token) {
    return switch (token) {
      case START_OBJECT -> "an object";
      case START_ARRAY -> "an array";
      case VALUE_STRING -> "a string";
      case VALUE_NUMBER_INT, VALUE_NUMBER_FLOAT -> "a number";
      case VALUE_TRUE, VALUE_FALSE -> "a boolean";
      case VALUE_NULL -> "null";
      default -> throw new AssertionError("not the start of a value: " + token);
    };
  }
}

package dev.loramerge.internal.json;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import java.io.IOException;
import java.io.StringWriter;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The small JSON documents that travel with adapters ({@code adapter_config.json}, diffusers'
 * {@code lora_adapter_metadata}), read into plain maps, lists, strings, numbers, booleans and
 * nulls, and written back with stable key order.
 */
public final class Json {
  private static final JsonFactory FACTORY =
      JsonFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build();

  private Json() {}

  /** Parses a JSON object. */
  public static Map<String, Object> parseObject(String json) throws IOException {
    try (JsonParser parser = FACTORY.createParser(json)) {
      if (parser.nextToken() != JsonToken.START_OBJECT) {
        throw new IOException("expected a JSON object");
      }
      @SuppressWarnings("unchecked")
      Map<String, Object> result = (Map<String, Object>) readValue(parser);
      if (parser.nextToken() != null) {
        throw new IOException("unexpected content after the JSON object");
      }
      return result;
    }
  }

  private static Object readValue(JsonParser parser) throws IOException {
    JsonToken token = parser.currentToken();
    switch (token) {
      case START_OBJECT:
        Map<String, Object> object = new LinkedHashMap<>();
        while (parser.nextToken() != JsonToken.END_OBJECT) {
          String name = parser.currentName();
          parser.nextToken();
          object.put(name, readValue(parser));
        }
        return object;
      case START_ARRAY:
        List<Object> array = new ArrayList<>();
        while (parser.nextToken() != JsonToken.END_ARRAY) {
          array.add(readValue(parser));
        }
        return array;
      case VALUE_STRING:
        return parser.getText();
      case VALUE_NUMBER_INT:
      case VALUE_NUMBER_FLOAT:
        return parser.getDecimalValue();
      case VALUE_TRUE:
        return Boolean.TRUE;
      case VALUE_FALSE:
        return Boolean.FALSE;
      case VALUE_NULL:
        return null;
      default:
        throw new IOException("unexpected JSON token " + token);
    }
  }

  /** Writes {@code value} (maps, lists, strings, numbers, booleans, nulls) as indented JSON. */
  public static String write(Object value, boolean pretty) throws IOException {
    StringWriter out = new StringWriter();
    try (JsonGenerator generator = FACTORY.createGenerator(out)) {
      if (pretty) {
        DefaultPrettyPrinter printer =
            new DefaultPrettyPrinter().withObjectIndenter(new DefaultIndenter("  ", "\n"));
        generator.setPrettyPrinter(printer);
      }
      writeValue(generator, value);
    }
    return out.toString();
  }

  private static void writeValue(JsonGenerator generator, Object value) throws IOException {
    if (value == null) {
      generator.writeNull();
    } else if (value instanceof Map) {
      generator.writeStartObject();
      for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
        generator.writeFieldName(entry.getKey().toString());
        writeValue(generator, entry.getValue());
      }
      generator.writeEndObject();
    } else if (value instanceof List) {
      generator.writeStartArray();
      for (Object element : (List<?>) value) {
        writeValue(generator, element);
      }
      generator.writeEndArray();
    } else if (value instanceof String) {
      generator.writeString((String) value);
    } else if (value instanceof Boolean) {
      generator.writeBoolean((Boolean) value);
    } else if (value instanceof Double) {
      writeNumber(generator, (Double) value);
    } else if (value instanceof Number) {
      generator.writeNumber(new BigDecimal(value.toString()));
    } else {
      throw new IllegalArgumentException("cannot write " + value.getClass() + " as JSON");
    }
  }

  /** Integral values as integers (PEFT writes {@code "r": 8}), others in shortest round-trip form. */
  private static void writeNumber(JsonGenerator generator, double value) throws IOException {
    if (value == Math.rint(value) && Math.abs(value) < 1e15) {
      generator.writeNumber((long) value);
    } else {
      generator.writeNumber(value);
    }
  }

  /** A number in a parsed document, as a double. */
  public static double number(Object value, String what) throws IOException {
    if (!(value instanceof BigDecimal)) {
      throw new IOException(what + " is " + describe(value) + ", expected a number");
    }
    return ((BigDecimal) value).doubleValue();
  }

  /** Describes a parsed value for an error message. */
  public static String describe(Object value) {
    if (value == null) {
      return "null";
    }
    if (value instanceof String) {
      return "the string '" + value + "'";
    }
    if (value instanceof Map) {
      return "an object";
    }
    if (value instanceof List) {
      return "an array";
    }
    return value.toString();
  }
}

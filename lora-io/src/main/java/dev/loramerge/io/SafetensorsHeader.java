package dev.loramerge.io;

import static java.nio.charset.StandardCharsets.UTF_8;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.json.JsonWriteFeature;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * The header of a safetensors file: an 8-byte little-endian length n, then n bytes of UTF-8 JSON
 * mapping each tensor name to {@code {"dtype", "shape", "data_offsets"}} and the optional key
 * {@code __metadata__} to a string→string map; the tensors' bytes follow.
 *
 * <p>{@link #read} accepts exactly what the reference reader accepts ({@code
 * huggingface/safetensors}, {@code tensor.rs}: {@code read_metadata} and {@code
 * Metadata::validate}) and reports each broken rule with its own message. It is stricter in three
 * places, where the reference silently picks one reading of an ambiguous header: duplicate names
 * and duplicate metadata keys (the reference keeps the last), and unknown fields in a tensor entry
 * (the reference ignores them). It also rejects integers above {@link Long#MAX_VALUE}, which the
 * reference reads as {@code usize} but no offset of a real file reaches. {@link #encode} writes
 * what the reference writer writes, byte for byte.
 */
record SafetensorsHeader(
    long length,
    ImmutableMap<String, String> metadata,
    ImmutableList<TensorSpec> tensors,
    ImmutableMap<String, DataOffsets> offsets) {
  /** The longest header the reference reads ({@code MAX_HEADER_SIZE}). */
  static final int MAX_LENGTH = 100_000_000;

  /** The key of the metadata map, which no tensor may take. */
  static final String METADATA = "__metadata__";

  private static final JsonFactory JSON =
      JsonFactory.builder()
          // Tensor names are unique per file, so a symbol table only costs memory, and crafted
          // names could overflow its hash buckets, which Jackson reports as IllegalStateException.
          .disable(JsonFactory.Feature.CANONICALIZE_FIELD_NAMES)
          // Messages must never quote the header itself.
          .disable(StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION)
          .streamReadConstraints(
              StreamReadConstraints.builder()
                  .maxDocumentLength(MAX_LENGTH)
                  // Metadata values (kohya's ss_tag_frequency, say) and names can be long, but
                  // never longer than the header.
                  .maxStringLength(MAX_LENGTH)
                  .maxNameLength(MAX_LENGTH)
                  // Valid integers have at most 19 digits.
                  .maxNumberLength(100)
                  // A valid header nests 3 deep (header, entry, shape); one level more lets a
                  // misplaced array or object reach the checks that name it.
                  .maxNestingDepth(4)
                  .build())
          // serde_json escapes control characters as \u001f, in lower case, and writes characters
          // outside the BMP as raw UTF-8, not as escaped surrogate pairs.
          .disable(JsonWriteFeature.WRITE_HEX_UPPER_CASE)
          .enable(JsonWriteFeature.COMBINE_UNICODE_SURROGATES_IN_UTF8)
          .build();

  // Jackson embeds start markers as "[Source: REDACTED (...); line: 1, column: 6]"; the source
  // part says nothing here, so messages keep only the position.
  private static final Pattern JACKSON_LOCATION =
      Pattern.compile("\\[Source: [^\\]]*; line: (\\d+), column: (\\d+)\\]");

  /** Offset of the data section in the file: the 8-byte length plus the header. */
  long dataOffset() {
    return 8 + length;
  }

  /**
   * Reads and validates the header of the file open in {@code channel}, with positional reads of
   * exactly 8 + n bytes.
   *
   * @param fileName the name that starts every message
   * @throws SafetensorsFormatException if the file is not a valid safetensors file
   * @throws IOException if reading fails
   */
  static SafetensorsHeader read(String fileName, FileChannel channel) throws IOException {
    long fileSize = channel.size();
    if (fileSize < 8) {
      throw SafetensorsFormatException.of(
          fileName, "file holds %d bytes, fewer than the 8 of the header length", fileSize);
    }
    ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
    long length = readFully(fileName, channel, prefix, 0).getLong();
    // The length is an unsigned 64-bit integer: a negative long stands for one above 2^63.
    if (length < 0 || length > MAX_LENGTH) {
      throw SafetensorsFormatException.of(
          fileName,
          "header length %s exceeds the maximum of %d bytes",
          Long.toUnsignedString(length),
          MAX_LENGTH);
    }
    if (8 + length > fileSize) {
      throw SafetensorsFormatException.of(
          fileName,
          "header length %d needs %d bytes but the file holds %d",
          length,
          8 + length,
          fileSize);
    }
    ByteBuffer bytes = readFully(fileName, channel, ByteBuffer.allocate((int) length), 8);
    CharBuffer text = decode(fileName, bytes);
    HeaderParser parser;
    try (JsonParser json = JSON.createParser(text.array(), 0, text.limit())) {
      parser = new HeaderParser(fileName, json);
      parser.parse();
    } catch (JsonProcessingException e) {
      JsonLocation at = e.getLocation();
      String where =
          at == null ? "" : " at line " + at.getLineNr() + ", column " + at.getColumnNr();
      String detail =
          JACKSON_LOCATION.matcher(e.getOriginalMessage()).replaceAll("line $1, column $2");
      throw new SafetensorsFormatException(
          fileName + ": header is not valid JSON" + where + ": " + detail, e);
    }
    List<HeaderParser.Entry> sorted = validate(fileName, parser.entries(), fileSize - 8 - length);
    ImmutableList.Builder<TensorSpec> tensors = ImmutableList.builderWithExpectedSize(sorted.size());
    ImmutableMap.Builder<String, DataOffsets> offsets =
        ImmutableMap.builderWithExpectedSize(sorted.size());
    for (HeaderParser.Entry entry : sorted) {
      tensors.add(new TensorSpec(entry.name(), entry.dtype(), entry.shape()));
      offsets.put(entry.name(), new DataOffsets(entry.begin(), entry.end()));
    }
    return new SafetensorsHeader(
        length, ImmutableMap.copyOf(parser.metadata()), tensors.build(), offsets.build());
  }

  /**
   * The header bytes the reference writer produces for {@code layout} (in that order, each
   * tensor's bytes right after the previous one's) and {@code metadata} (in its iteration order,
   * omitted when empty): compact JSON, {@code __metadata__} first, padded with spaces to a multiple
   * of 8 so that the data section is 8-byte aligned.
   *
   * @throws ArithmeticException if the tensors' bytes together overflow a {@code long}
   */
  static byte[] encode(List<TensorSpec> layout, Map<String, String> metadata) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    try (JsonGenerator json = JSON.createGenerator(out)) {
      json.writeStartObject();
      if (!metadata.isEmpty()) {
        json.writeObjectFieldStart(METADATA);
        for (Map.Entry<String, String> entry : metadata.entrySet()) {
          json.writeStringField(entry.getKey(), entry.getValue());
        }
        json.writeEndObject();
      }
      long begin = 0;
      for (TensorSpec spec : layout) {
        long[] shape = spec.shape();
        long end = Math.addExact(begin, spec.byteSize());
        json.writeObjectFieldStart(spec.name());
        json.writeStringField("dtype", spec.dtype().safetensorsName());
        json.writeFieldName("shape");
        json.writeArray(shape, 0, shape.length);
        json.writeFieldName("data_offsets");
        json.writeArray(new long[] {begin, end}, 0, 2);
        json.writeEndObject();
        begin = end;
      }
      json.writeEndObject();
    } catch (IOException e) {
      throw new AssertionError("writing to memory cannot fail", e);
    }
    while (out.size() % 8 != 0) {
      out.write(' ');
    }
    return out.toByteArray();
  }

  /**
   * Whether {@code text} holds a surrogate that is not half of a pair; such a string has no UTF-8
   * form, so the reference neither reads nor writes it.
   */
  static boolean hasUnpairedSurrogate(String text) {
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (Character.isHighSurrogate(c)
          && i + 1 < text.length()
          && Character.isLowSurrogate(text.charAt(i + 1))) {
        i++;
      } else if (Character.isSurrogate(c)) {
        return true;
      }
    }
    return false;
  }

  private static ByteBuffer readFully(
      String fileName, FileChannel channel, ByteBuffer buffer, long position) throws IOException {
    while (buffer.hasRemaining()) {
      if (channel.read(buffer, position + buffer.position()) < 0) {
        throw new EOFException(fileName + ": file ended inside its header; was it truncated?");
      }
    }
    return buffer.flip();
  }

  private static CharBuffer decode(String fileName, ByteBuffer bytes)
      throws SafetensorsFormatException {
    CharsetDecoder decoder =
        UTF_8
            .newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT)
            .onUnmappableCharacter(CodingErrorAction.REPORT);
    // UTF-8 never decodes to more chars than it has bytes.
    CharBuffer text = CharBuffer.allocate(bytes.remaining());
    if (decoder.decode(bytes, text, true).isError()) {
      throw SafetensorsFormatException.of(
          fileName,
          "header is not valid UTF-8: malformed sequence at byte %d of the header",
          bytes.position());
    }
    decoder.flush(text);
    return text.flip();
  }

  /**
   * Checks the layout rules of {@code Metadata::validate} and returns the entries in data-offset
   * order.
   */
  private static List<HeaderParser.Entry> validate(
      String fileName, Iterable<HeaderParser.Entry> entries, long dataSize) throws SafetensorsFormatException {
    List<HeaderParser.Entry> sorted = new ArrayList<>();
    entries.forEach(sorted::add);
    // Offsets may come in any order in the header; sorted, they must tile the data section.
    sorted.sort(Comparator.comparingLong(HeaderParser.Entry::begin).thenComparingLong(HeaderParser.Entry::end));
    long covered = 0;
    String previous = null;
    for (HeaderParser.Entry entry : sorted) {
      String name = entry.name();
      long begin = entry.begin();
      long end = entry.end();
      if (begin != covered) {
        throw previous == null
            ? SafetensorsFormatException.of(
                fileName,
                "tensor '%s' data_offsets [%d, %d) begin at %d but the first tensor must begin at"
                    + " 0",
                name,
                begin,
                end,
                begin)
            : SafetensorsFormatException.of(
                fileName,
                "tensor '%s' data_offsets [%d, %d) begin at %d but the previous tensor '%s' ends at"
                    + " %d",
                name,
                begin,
                end,
                begin,
                previous,
                covered);
      }
      if (end < begin) {
        throw SafetensorsFormatException.of(
            fileName, "tensor '%s' data_offsets [%d, %d) end before they begin", name, begin, end);
      }
      String type = entry.dtype().safetensorsName() + " " + Arrays.toString(entry.shape());
      long needed;
      try {
        needed = Math.multiplyExact(TensorData.numel(entry.shape()), entry.dtype().byteSize());
      } catch (ArithmeticException e) {
        throw SafetensorsFormatException.of(
            fileName, "tensor '%s' size of %s overflows 64 bits", name, type);
      }
      if (end - begin != needed) {
        throw SafetensorsFormatException.of(
            fileName,
            "tensor '%s' data_offsets [%d, %d) hold %d bytes but %s needs %d bytes",
            name,
            begin,
            end,
            end - begin,
            type,
            needed);
      }
      covered = end;
      previous = name;
    }
    if (covered != dataSize) {
      throw SafetensorsFormatException.of(
          fileName,
          "tensors cover %d bytes but the file holds %d bytes after the header",
          covered,
          dataSize);
    }
    return sorted;
  }
}

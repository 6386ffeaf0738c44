package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * Writes whole safetensors files laid out the way the reference writer ({@code
 * huggingface/safetensors}) lays them out, so the output matches Python's byte for byte.
 *
 * <p>To read, use {@link SafetensorsFile#open}; to write tensors that are not all in memory at
 * once, use {@link SafetensorsWriter}.
 */
public final class Safetensors {
  // The reference's Dtype enum lists the types by increasing alignment, and its writer sorts by
  // that enum, descending, then by name (tensor.rs, prepare), so types of one size keep a fixed
  // order: BF16 before F16, I64 before F64. U16, U32 and U64 are missing because DType lacks them.
  private static final ImmutableList<DType> REFERENCE_ORDER =
      ImmutableList.of(
          DType.BOOL,
          DType.U8,
          DType.I8,
          DType.F8_E5M2,
          DType.F8_E4M3,
          DType.I16,
          DType.F16,
          DType.BF16,
          DType.I32,
          DType.F32,
          DType.F64,
          DType.I64);

  private static final Comparator<Map.Entry<String, TensorData>> REFERENCE_LAYOUT =
      Comparator.<Map.Entry<String, TensorData>>comparingInt(
              entry -> REFERENCE_ORDER.indexOf(entry.getValue().dtype()))
          .reversed()
          .thenComparing(Map.Entry::getKey, Safetensors::compareCodePoints);

  private Safetensors() {}

  /**
   * Writes {@code tensors} and {@code metadata} to {@code target} atomically, through a {@link
   * SafetensorsWriter}: tensors sorted by descending dtype alignment, then by name, as the
   * reference writer sorts them; metadata in the map's iteration order.
   *
   * @throws IllegalArgumentException as {@link SafetensorsWriter#create} does
   * @throws IOException if writing fails; {@code target} is then unchanged
   */
  public static void write(
      Path target, Map<String, TensorData> tensors, Map<String, String> metadata)
      throws IOException {
    checkNotNull(tensors, "tensors");
    List<Map.Entry<String, TensorData>> ordered =
        tensors.entrySet().stream().sorted(REFERENCE_LAYOUT).toList();
    List<TensorSpec> layout =
        ordered.stream()
            .map(entry -> TensorSpec.of(entry.getKey(), entry.getValue()))
            .toList();
    try (SafetensorsWriter writer = SafetensorsWriter.create(target, layout, metadata)) {
      for (Map.Entry<String, TensorData> entry : ordered) {
        writer.write(entry.getKey(), entry.getValue());
      }
      writer.commit();
    }
  }

  /**
   * Orders strings by code point, which is the byte order of their UTF-8 forms and so Rust's string
   * order; {@link String#compareTo} compares UTF-16 units and disagrees above U+FFFF.
   */
  private static int compareCodePoints(String left, String right) {
    int i = 0;
    int j = 0;
    while (i < left.length() && j < right.length()) {
      int a = left.codePointAt(i);
      int b = right.codePointAt(j);
      if (a != b) {
        return Integer.compare(a, b);
      }
      i += Character.charCount(a);
      j += Character.charCount(b);
    }
    return Boolean.compare(i < left.length(), j < right.length());
  }
}

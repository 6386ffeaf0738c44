package dev.loramerge;

import java.util.Locale;
import java.util.Optional;

/**
 * The element types a safetensors file can hold, with the names the format uses.
 *
 * <p>Floating-point types decode to {@code double} exactly; {@link TensorData} converts between
 * them with one correct rounding.
 */
public enum DType {
  F64("F64", 8, true),
  F32("F32", 4, true),
  F16("F16", 2, true),
  BF16("BF16", 2, true),
  F8_E4M3("F8_E4M3", 1, true),
  F8_E5M2("F8_E5M2", 1, true),
  I64("I64", 8, false),
  I32("I32", 4, false),
  I16("I16", 2, false),
  I8("I8", 1, false),
  U8("U8", 1, false),
  BOOL("BOOL", 1, false);

  private final String safetensorsName;
  private final int byteSize;
  private final boolean floatingPoint;

  DType(String safetensorsName, int byteSize, boolean floatingPoint) {
    this.safetensorsName = safetensorsName;
    this.byteSize = byteSize;
    this.floatingPoint = floatingPoint;
  }

  /** The name the safetensors header uses, e.g. {@code "BF16"}. */
  public String safetensorsName() {
    return safetensorsName;
  }

  /** Bytes per element. */
  public int byteSize() {
    return byteSize;
  }

  /** Whether the type holds real numbers (and can hold LoRA factors or weights). */
  public boolean isFloatingPoint() {
    return floatingPoint;
  }

  /** The type named {@code name} in a safetensors header, if there is one. */
  public static Optional<DType> fromSafetensorsName(String name) {
    for (DType type : values()) {
      if (type.safetensorsName.equals(name)) {
        return Optional.of(type);
      }
    }
    return Optional.empty();
  }

  /**
   * The type a user names on the command line: {@code fp32}, {@code fp16}, {@code bf16}, {@code
   * fp64}, {@code fp8} or {@code fp8_e4m3} (float8 e4m3fn, PyTorch's {@code float8_e4m3fn}: no
   * infinity, largest finite value 448), {@code fp8_e5m2} (PyTorch's {@code float8_e5m2}: with
   * infinities, largest finite value 57344), or a safetensors name ({@code F8_E4M3}, …).
   */
  public static Optional<DType> fromUserName(String name) {
    switch (name.toLowerCase(Locale.ROOT)) {
      case "fp32":
      case "float32":
      case "float":
        return Optional.of(F32);
      case "fp16":
      case "float16":
      case "half":
        return Optional.of(F16);
      case "bf16":
      case "bfloat16":
        return Optional.of(BF16);
      case "fp64":
      case "float64":
      case "double":
        return Optional.of(F64);
      case "fp8":
      case "fp8_e4m3":
      case "float8_e4m3fn":
        return Optional.of(F8_E4M3);
      case "fp8_e5m2":
      case "float8_e5m2":
        return Optional.of(F8_E5M2);
      default:
        return fromSafetensorsName(name.toUpperCase(Locale.ROOT));
    }
  }
}

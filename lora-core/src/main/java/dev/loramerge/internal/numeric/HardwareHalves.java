package dev.loramerge.internal.numeric;

/**
 * {@link FloatFormats}' fp16 kernels on the JDK's own {@code Float.float16ToFloat} and {@code
 * Float.floatToFloat16}, which C2 compiles to the CPU's conversion instructions (F16C, AVX-512)
 * and, from JDK 21, vectorizes in plain loops: two to four times faster than {@link
 * VectorHalves}' bit manipulation, and needing no incubator module.
 *
 * <p>The library compiles for Java 17, where these methods do not exist: the implementation,
 * {@code Jdk21Halves}, is compiled for Java 21 from {@code src/main/java21} into the jar's {@code
 * META-INF/versions/21} (a multi-release jar; built whenever Maven runs on JDK 21 or later) and
 * loaded by name only on Java 21 or later. Everywhere else {@link #INSTANCE} is empty and the
 * other kernels run. Each call converts a whole chunk, so the interface costs nothing measurable.
 *
 * <p>The JDK's conversions agree with {@link FloatFormats}' bits on every finite value and
 * infinity, but not on NaN, whose payload they treat as the CPU does (the hardware widening
 * quiets a signalling NaN; the narrowing keeps part of the payload). The callers check each chunk
 * for an all-ones exponent ({@link NonFinite}) and redo the rare chunks that have one on the
 * scalar path.
 */
interface HardwareHalves {
  /** The JDK 21 kernels, or null before Java 21 or in a build without them. */
  HardwareHalves INSTANCE = load();

  /** Whether {@link #INSTANCE} is there. */
  boolean AVAILABLE = INSTANCE != null;

  private static HardwareHalves load() {
    if (Runtime.version().feature() < 21) {
      return null;
    }
    try {
      return (HardwareHalves) Class.forName(HardwareHalves.class.getPackageName() + ".Jdk21Halves").getDeclaredConstructor().newInstance();
    } catch (ReflectiveOperationException | LinkageError e) {
      return null;
    }
  }

  /** fp16 {@code halves[0, length)} to float32 into {@code out} from {@code first}; NaN bits as the CPU gives them. */
  void widen(short[] halves, int length, float[] out, int first);

  /** float32 {@code in[first, first + length)} to fp16 in {@code halves[0, length)}; NaN bits as the CPU gives them. */
  void narrow(float[] in, int first, short[] halves, int length);

  /**
   * {@code out[0, length)} = fp16 of {@code coefficient·halves}, the product rounded to float32
   * first. From index 0: with an offset into one of two short arrays, which might be one array,
   * C2 leaves the loop scalar.
   */
  void scale(short[] halves, float coefficient, short[] out, int length);

  /** {@code sum[0, length)} = {@code coefficient·halves} in float32. */
  void scaleInto(short[] halves, float coefficient, float[] sum, int length);

  /** {@code sum[0, length)} += {@code coefficient·halves}, the product and the sum each rounded to float32. */
  void addScaled(short[] halves, float coefficient, float[] sum, int length);

  /**
   * {@code out[0, length)} = fp16 of {@code first·a + second·b}: each product rounded to
   * float32, their sum rounded to float32, then once to fp16.
   */
  void sum(short[] a, float first, short[] b, float second, short[] out, int length);

  /** {@code out[0, length)} = fp16 of {@code sum + coefficient·halves}, rounded as {@link #sum}: a weighted sum's last input. */
  void finish(float[] sum, short[] halves, float coefficient, short[] out, int length);
}

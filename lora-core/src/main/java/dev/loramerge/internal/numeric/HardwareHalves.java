package dev.loramerge.internal.numeric;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;

/**
 * {@link FloatFormats}' bulk fp16 conversions on the JDK's own {@code Float.float16ToFloat} and
 * {@code Float.floatToFloat16} (JDK 20 and later), which C2 compiles to the CPU's conversion
 * instructions (F16C, AVX-512) and, from JDK 21, vectorizes in plain loops: two to four times
 * faster than {@link VectorHalves}' bit manipulation, and needing no incubator module.
 *
 * <p>The library compiles for Java 17, so the methods are reached through constant method
 * handles, which C2 inlines into the same code as direct calls. They exist only where {@link
 * #AVAILABLE}; the loops that call them run only then.
 *
 * <p>The bits are {@link FloatFormats}' on every path. The JDK's conversions agree with them on
 * every finite value and infinity, but not on NaN, whose payload they treat as the CPU does (the
 * hardware widening quiets a signalling NaN; the narrowing keeps part of the payload). So each
 * method leaves NaN to the caller: it reports whether a non-finite value went through, and the
 * caller redoes only those elements on the scalar path, which is rare and cheap to detect.
 */
final class HardwareHalves {
  private static final MethodHandle TO_FLOAT = find("float16ToFloat", MethodType.methodType(float.class, short.class));
  private static final MethodHandle TO_HALF = find("floatToFloat16", MethodType.methodType(short.class, float.class));

  /**
   * Whether the JDK's conversions are there and vectorized: JDK 21 or later (JDK 20 has them,
   * but compiles them one element at a time, slower than {@link VectorHalves}).
   */
  static final boolean AVAILABLE = Runtime.version().feature() >= 21 && TO_FLOAT != null && TO_HALF != null;

  private HardwareHalves() {}

  private static MethodHandle find(String name, MethodType type) {
    try {
      return MethodHandles.publicLookup().findStatic(Float.class, name, type);
    } catch (NoSuchMethodException | IllegalAccessException e) {
      return null;
    }
  }

  /** fp16 to float32 of {@code halves[0, length)} into {@code out} from {@code first}; NaN bits as the CPU gives them. */
  static void widen(short[] halves, int length, float[] out, int first) {
    try {
      for (int i = 0; i < length; i++) {
        out[first + i] = (float) TO_FLOAT.invokeExact(halves[i]);
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }

  /** float32 {@code in[first, first + length)} to fp16 in {@code halves[0, length)}; NaN bits as the CPU gives them. */
  static void narrow(float[] in, int first, short[] halves, int length) {
    try {
      for (int i = 0; i < length; i++) {
        halves[i] = (short) TO_HALF.invokeExact(in[first + i]);
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }

  /**
   * fp16 {@code halves[0, length)} times {@code coefficient}, rounded once to fp16 into {@code
   * out[0, length)}: the product in float32, as {@link FloatFormats#toFloat16(float)} of it.
   */
  static void scale(short[] halves, float coefficient, short[] out, int length) {
    try {
      for (int i = 0; i < length; i++) {
        out[i] = (short) TO_HALF.invokeExact((float) TO_FLOAT.invokeExact(halves[i]) * coefficient);
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }

  /** {@code sum[0, length)} = fp16 {@code halves} times {@code coefficient}, in float32. */
  static void scaleInto(short[] halves, float coefficient, float[] sum, int length) {
    try {
      for (int i = 0; i < length; i++) {
        sum[i] = (float) TO_FLOAT.invokeExact(halves[i]) * coefficient;
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }

  /** {@code sum[0, length)} += fp16 {@code halves} times {@code coefficient}, each product and sum rounded to float32. */
  static void addScaled(short[] halves, float coefficient, float[] sum, int length) {
    try {
      for (int i = 0; i < length; i++) {
        sum[i] += (float) TO_FLOAT.invokeExact(halves[i]) * coefficient;
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }

  /**
   * {@code out[0, length)} = fp16 of {@code first·a + second·b} for fp16 {@code a} and {@code b}:
   * each product rounded to float32, their sum rounded to float32, then once to fp16.
   */
  static void sum(short[] a, float first, short[] b, float second, short[] out, int length) {
    try {
      for (int i = 0; i < length; i++) {
        float value = (float) TO_FLOAT.invokeExact(a[i]) * first;
        value += (float) TO_FLOAT.invokeExact(b[i]) * second;
        out[i] = (short) TO_HALF.invokeExact(value);
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }

  /**
   * {@code out[0, length)} = fp16 of {@code sum + coefficient·halves}, the product and sum each
   * rounded to float32, then once to fp16: the last input of a weighted sum.
   */
  static void finish(float[] sum, short[] halves, float coefficient, short[] out, int length) {
    try {
      for (int i = 0; i < length; i++) {
        float value = sum[i];
        value += (float) TO_FLOAT.invokeExact(halves[i]) * coefficient;
        out[i] = (short) TO_HALF.invokeExact(value);
      }
    } catch (Throwable e) {
      throw new AssertionError(e);
    }
  }
}

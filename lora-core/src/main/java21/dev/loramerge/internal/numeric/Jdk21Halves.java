package dev.loramerge.internal.numeric;

/**
 * {@link HardwareHalves} on Java 21 and later: plain loops over {@code Float.float16ToFloat} and
 * {@code Float.floatToFloat16}, which C2 vectorizes into the CPU's conversion instructions. Each
 * loop is a method of its own, so that it is compiled, and vectorized, alone.
 */
final class Jdk21Halves implements HardwareHalves {
  Jdk21Halves() {}

  @Override
  public void widen(short[] halves, int length, float[] out, int first) {
    for (int i = 0; i < length; i++) {
      out[first + i] = Float.float16ToFloat(halves[i]);
    }
  }

  @Override
  public void narrow(float[] in, int first, short[] halves, int length) {
    for (int i = 0; i < length; i++) {
      halves[i] = Float.floatToFloat16(in[first + i]);
    }
  }

  @Override
  public void scale(short[] halves, float coefficient, short[] out, int length) {
    for (int i = 0; i < length; i++) {
      out[i] = Float.floatToFloat16(Float.float16ToFloat(halves[i]) * coefficient);
    }
  }

  @Override
  public void scaleInto(short[] halves, float coefficient, float[] sum, int length) {
    for (int i = 0; i < length; i++) {
      sum[i] = Float.float16ToFloat(halves[i]) * coefficient;
    }
  }

  @Override
  public void addScaled(short[] halves, float coefficient, float[] sum, int length) {
    for (int i = 0; i < length; i++) {
      sum[i] += Float.float16ToFloat(halves[i]) * coefficient;
    }
  }

  @Override
  public void sum(short[] a, float first, short[] b, float second, short[] out, int length) {
    for (int i = 0; i < length; i++) {
      float value = Float.float16ToFloat(a[i]) * first;
      value += Float.float16ToFloat(b[i]) * second;
      out[i] = Float.floatToFloat16(value);
    }
  }

  @Override
  public void finish(float[] sum, short[] halves, float coefficient, short[] out, int length) {
    for (int i = 0; i < length; i++) {
      float value = sum[i];
      value += Float.float16ToFloat(halves[i]) * coefficient;
      out[i] = Float.floatToFloat16(value);
    }
  }
}

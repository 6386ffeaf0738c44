package dev.loramerge;

import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The updates of the adapter kinds other than plain LoRA, in float64, row-major in the base
 * weight's layout [out, in·kh·kw]. The formulas follow LyCORIS ({@code lycoris/functional/loha.py},
 * {@code lokr.py}, {@code general.py rebuild_tucker}) and ComfyUI ({@code
 * comfy/weight_adapter/lora.py}, {@code loha.py}, {@code lokr.py}), where the two agree; where a
 * loader multiplies the update by its strength, the caller does.
 */
final class KindMath {
  static final String LORA_DOWN = "lora_down";
  static final String LORA_UP = "lora_up";
  static final String LORA_MID = "lora_mid";
  static final String HADA_W1_A = "hada_w1_a";
  static final String HADA_W1_B = "hada_w1_b";
  static final String HADA_W2_A = "hada_w2_a";
  static final String HADA_W2_B = "hada_w2_b";
  static final String HADA_T1 = "hada_t1";
  static final String HADA_T2 = "hada_t2";
  static final String LOKR_W1 = "lokr_w1";
  static final String LOKR_W1_A = "lokr_w1_a";
  static final String LOKR_W1_B = "lokr_w1_b";
  static final String LOKR_W2 = "lokr_w2";
  static final String LOKR_W2_A = "lokr_w2_a";
  static final String LOKR_W2_B = "lokr_w2_b";
  static final String LOKR_T2 = "lokr_t2";
  static final String DIFF = "diff";
  /** A {@link AdapterKind#REPLACEMENT}'s tensor, under ComfyUI's name for a {@code "set"} patch. */
  static final String SET_WEIGHT = "set_weight";

  private KindMath() {}

  /** The tensors each kind needs (and, for LoKr, the ones it may have). */
  static Set<String> required(AdapterKind kind) {
    switch (kind) {
      case LORA:
        return Set.of(LORA_DOWN, LORA_UP);
      case LORA_TUCKER:
        return Set.of(LORA_DOWN, LORA_UP, LORA_MID);
      case LOHA:
        return Set.of(HADA_W1_A, HADA_W1_B, HADA_W2_A, HADA_W2_B);
      case LOHA_TUCKER:
        return Set.of(HADA_W1_A, HADA_W1_B, HADA_W2_A, HADA_W2_B, HADA_T1, HADA_T2);
      case LOKR:
        return Set.of();
      case FULL:
        return Set.of(DIFF);
      case REPLACEMENT:
        return Set.of(SET_WEIGHT);
      default:
        throw new AssertionError(kind);
    }
  }

  /**
   * The shape of the base weight the parts update, as far as they tell: 4-d where a Tucker core
   * or a 4-d LoKr w2 gives the kernel, else [out, in·kh·kw] (LyCORIS flattens LoHa and factored
   * LoKr convolutions, and reshapes to the weight's shape when it applies them).
   */
  static long[] impliedShape(ModuleKey key, AdapterKind kind, Map<String, TensorData> parts) {
    switch (kind) {
      case LORA_TUCKER: {
        TensorData down = parts.get(LORA_DOWN);
        TensorData up = parts.get(LORA_UP);
        TensorData mid = parts.get(LORA_MID);
        expect(key, mid.rank() == 4 && mid.dim(0) == up.dim(1) && mid.dim(1) == down.dim(0)
            && down.numel() == down.dim(0) * down.dim(1) && up.numel() == up.dim(0) * up.dim(1),
            "Tucker LoCon: lora_up [out, r, 1, 1], lora_mid [r, r, kh, kw], lora_down [r, in, 1, 1]", parts);
        return new long[] {up.dim(0), down.dim(1), mid.dim(2), mid.dim(3)};
      }
      case LOHA: {
        TensorData w1a = parts.get(HADA_W1_A);
        TensorData w1b = parts.get(HADA_W1_B);
        TensorData w2a = parts.get(HADA_W2_A);
        TensorData w2b = parts.get(HADA_W2_B);
        long out = w1a.dim(0);
        long inner = w1b.numel() / Math.max(1, w1b.dim(0));
        expect(key, w1a.rank() == 2 && w2a.rank() == 2 && w1a.dim(1) == w1b.dim(0) && w2a.dim(1) == w2b.dim(0)
            && w2a.dim(0) == out && w2b.numel() / Math.max(1, w2b.dim(0)) == inner && w1b.dim(0) > 0 && w2b.dim(0) > 0,
            "LoHa: hada_w1_a [out, r1], hada_w1_b [r1, in·k·k], hada_w2_a [out, r2], hada_w2_b [r2, in·k·k]", parts);
        return new long[] {out, inner};
      }
      case LOHA_TUCKER: {
        TensorData w1a = parts.get(HADA_W1_A);
        TensorData w1b = parts.get(HADA_W1_B);
        TensorData w2a = parts.get(HADA_W2_A);
        TensorData w2b = parts.get(HADA_W2_B);
        TensorData t1 = parts.get(HADA_T1);
        TensorData t2 = parts.get(HADA_T2);
        expect(key, w1a.rank() == 2 && w1b.rank() == 2 && w2a.rank() == 2 && w2b.rank() == 2 && t1.rank() == 4
            && Arrays.equals(t1.shape(), t2.shape()) && t1.dim(0) == w1a.dim(0) && t1.dim(1) == w1b.dim(0)
            && w2a.dim(1) == w1a.dim(1) && w2b.dim(1) == w1b.dim(1) && t2.dim(0) == w2a.dim(0) && t2.dim(1) == w2b.dim(0),
            "Tucker LoHa: hada_t1/t2 [r, r, kh, kw], hada_w*_a [r, out], hada_w*_b [r, in]", parts);
        return new long[] {w1a.dim(1), w1b.dim(1), t1.dim(2), t1.dim(3)};
      }
      case LOKR: {
        long[] w1 = lokrW1Shape(key, parts);
        long[] w2 = lokrW2Shape(key, parts);
        return w2.length == 4
            ? new long[] {w1[0] * w2[0], w1[1] * w2[1], w2[2], w2[3]}
            : new long[] {w1[0] * w2[0], w1[1] * w2[1]};
      }
      case FULL: {
        TensorData diff = parts.get(DIFF);
        expect(key, diff.rank() >= 1, "a full difference 'diff' of the weight's shape", parts);
        return diff.shape();
      }
      case REPLACEMENT: {
        TensorData weight = parts.get(SET_WEIGHT);
        expect(key, weight.rank() >= 1 && parts.size() == 1, "a replacement 'set_weight' of the weight's shape", parts);
        return weight.shape();
      }
      default:
        throw new AssertionError(kind);
    }
  }

  private static long[] lokrW1Shape(ModuleKey key, Map<String, TensorData> parts) {
    TensorData w1 = parts.get(LOKR_W1);
    TensorData w1a = parts.get(LOKR_W1_A);
    TensorData w1b = parts.get(LOKR_W1_B);
    if (w1 != null && w1a == null && w1b == null && w1.rank() == 2) {
      return w1.shape();
    }
    expect(key, w1 == null && w1a != null && w1b != null && w1a.rank() == 2 && w1b.rank() == 2 && w1a.dim(1) == w1b.dim(0),
        "LoKr: lokr_w1 [a, b] or lokr_w1_a [a, r] with lokr_w1_b [r, b]", parts);
    return new long[] {w1a.dim(0), w1b.dim(1)};
  }

  private static long[] lokrW2Shape(ModuleKey key, Map<String, TensorData> parts) {
    TensorData w2 = parts.get(LOKR_W2);
    TensorData w2a = parts.get(LOKR_W2_A);
    TensorData w2b = parts.get(LOKR_W2_B);
    TensorData t2 = parts.get(LOKR_T2);
    if (w2 != null && w2a == null && w2b == null && t2 == null && (w2.rank() == 2 || w2.rank() == 4)) {
      return w2.shape();
    }
    expect(key, w2 == null && w2a != null && w2b != null && w2a.rank() == 2 && w2b.rank() == 2,
        "LoKr: lokr_w2 [c, d(, kh, kw)], or lokr_w2_a with lokr_w2_b (and lokr_t2)", parts);
    if (t2 != null) {
      expect(key, t2.rank() == 4 && t2.dim(0) == w2a.dim(0) && t2.dim(1) == w2b.dim(0),
          "Tucker LoKr: lokr_t2 [r, r, kh, kw], lokr_w2_a [r, c], lokr_w2_b [r, d]", parts);
      return new long[] {w2a.dim(1), w2b.dim(1), t2.dim(2), t2.dim(3)};
    }
    expect(key, w2a.dim(1) == w2b.dim(0), "LoKr: lokr_w2_a [c, r] with lokr_w2_b [r, d·k·k]", parts);
    return new long[] {w2a.dim(0), w2b.dim(1)};
  }

  /**
   * The rank alpha divides by: LoHa's r1, LoCon's r, LoKr's w2 rank when w2 is factored, else
   * w1's when w1 is, else 0 (ComfyUI {@code lokr.py}: {@code dim} is set by the factored parts,
   * w2 last).
   */
  static int rank(AdapterKind kind, Map<String, TensorData> parts) {
    switch (kind) {
      case LORA:
      case LORA_TUCKER:
        return Math.toIntExact(parts.get(LORA_DOWN).dim(0));
      case LOHA:
      case LOHA_TUCKER:
        return Math.toIntExact(parts.get(HADA_W1_B).dim(0));
      case LOKR:
        if (parts.containsKey(LOKR_W2_B)) {
          return Math.toIntExact(parts.get(LOKR_W2_B).dim(0));
        }
        return parts.containsKey(LOKR_W1_B) ? Math.toIntExact(parts.get(LOKR_W1_B).dim(0)) : 0;
      case FULL:
      case REPLACEMENT:
        return 0;
      default:
        throw new AssertionError(kind);
    }
  }

  /**
   * An upper bound of the update's rank as a matrix [out, in·kh·kw]: a Hadamard product's rank is
   * at most the product of its halves' ranks, a Kronecker product's the product of its factors'.
   */
  static long rankBound(AdapterKind kind, Map<String, TensorData> parts, long[] shape) {
    long out = shape[0];
    long inner = TensorData.numel(shape) / out;
    long bound;
    switch (kind) {
      case LORA:
      case LORA_TUCKER:
        bound = parts.get(LORA_DOWN).dim(0);
        break;
      case LOHA:
      case LOHA_TUCKER:
        bound = parts.get(HADA_W1_B).dim(0) * parts.get(HADA_W2_B).dim(0);
        break;
      case LOKR: {
        TensorData w1 = parts.get(LOKR_W1);
        long first = w1 != null ? Math.min(w1.dim(0), w1.dim(1)) : parts.get(LOKR_W1_B).dim(0);
        TensorData w2 = parts.get(LOKR_W2);
        long second = w2 != null ? Math.min(w2.dim(0), w2.numel() / w2.dim(0)) : parts.get(LOKR_W2_B).dim(0);
        bound = first * second;
        break;
      }
      default:
        bound = Math.min(out, inner);
    }
    return Math.min(bound, Math.min(out, inner));
  }

  /** The update's scale: α/r, but 1 for a LoKr with no factored part and for a full difference. */
  static double scale(AdapterKind kind, Map<String, TensorData> parts, double alpha, ScaleRule rule) {
    int rank = rank(kind, parts);
    switch (kind) {
      case LORA:
      case LORA_TUCKER:
        return rule.scale(alpha, rank);
      case LOHA:
      case LOHA_TUCKER:
        return alpha / rank;
      case LOKR:
        return rank == 0 ? 1 : alpha / rank;
      default:
        return 1;
    }
  }

  /**
   * The Tucker LoCon's exact down factor [r, in, kh, kw]: A[p, i, s] = Σ_q mid[p, q, s]·down[q, i],
   * so that up·A is LyCORIS's {@code rebuild_tucker(mid, up, down)}.
   */
  static TensorData tuckerDown(Map<String, TensorData> parts) {
    TensorData down = parts.get(LORA_DOWN);
    TensorData mid = parts.get(LORA_MID);
    int rank = Math.toIntExact(down.dim(0));
    int in = Math.toIntExact(down.dim(1));
    int kernel = Math.toIntExact(mid.dim(2) * mid.dim(3));
    return TensorData.ofDoubles(
        contractCore(mid.toDoubleArray(), down.toDoubleArray(), Math.toIntExact(mid.dim(0)), rank, in, kernel),
        DType.F64, mid.dim(0), in, mid.dim(2), mid.dim(3));
  }

  /**
   * T[p, i, s] = Σ_q core[p, q, s]·factor[q, i]: a core [rows, rank, kernel] applied to a factor
   * [rank, in], giving [rows, in·kernel] with the kernel innermost.
   */
  private static double[] contractCore(double[] core, double[] factor, int rows, int rank, int in, int kernel) {
    double[] result = new double[Math.multiplyExact(rows, Math.multiplyExact(in, kernel))];
    for (int p = 0; p < rows; p++) {
      for (int q = 0; q < rank; q++) {
        for (int s = 0; s < kernel; s++) {
          double c = core[(p * rank + q) * kernel + s];
          if (c == 0) {
            continue;
          }
          int row = p * in * kernel;
          for (int i = 0; i < in; i++) {
            result[row + i * kernel + s] += c * factor[q * in + i];
          }
        }
      }
    }
    return result;
  }

  /** left [m, r] times right [r, n], both row-major; {@code transposedLeft} reads left as [r, m]. */
  private static double[] product(double[] left, boolean transposedLeft, double[] right, int m, int r, int n) {
    double[] result = new double[Math.multiplyExact(m, n)];
    for (int o = 0; o < m; o++) {
      for (int p = 0; p < r; p++) {
        double factor = transposedLeft ? left[p * m + o] : left[o * r + p];
        if (factor == 0) {
          continue;
        }
        int rowRight = p * n;
        int rowResult = o * n;
        for (int i = 0; i < n; i++) {
          result[rowResult + i] += factor * right[rowRight + i];
        }
      }
    }
    return result;
  }

  /** A Tucker half [out, in·kernel]: Σ_i wa[i, p]·(core ×₂ wb)[i, ·] (LyCORIS {@code rebuild_tucker}). */
  private static double[] tuckerHalf(TensorData core, TensorData wa, TensorData wb) {
    int rank = Math.toIntExact(core.dim(0));
    int inner = Math.toIntExact(core.dim(1));
    int in = Math.toIntExact(wb.dim(1));
    int kernel = Math.toIntExact(core.dim(2) * core.dim(3));
    double[] contracted = contractCore(core.toDoubleArray(), wb.toDoubleArray(), rank, inner, in, kernel);
    return product(wa.toDoubleArray(), true, contracted, Math.toIntExact(wa.dim(1)), rank, in * kernel);
  }

  /** The unscaled update of {@code kind} (the caller multiplies by the scale), [out, numel/out]. */
  static double[] unscaledDelta(AdapterKind kind, Map<String, TensorData> parts) {
    switch (kind) {
      case LORA_TUCKER: {
        TensorData up = parts.get(LORA_UP);
        TensorData down = tuckerDown(parts);
        int rank = Math.toIntExact(up.dim(1));
        int out = Math.toIntExact(up.dim(0));
        return product(up.toDoubleArray(), false, down.toDoubleArray(), out, rank, Math.toIntExact(down.numel() / rank));
      }
      case LOHA: {
        double[] first = lowRank(parts.get(HADA_W1_A), parts.get(HADA_W1_B));
        double[] second = lowRank(parts.get(HADA_W2_A), parts.get(HADA_W2_B));
        for (int i = 0; i < first.length; i++) {
          first[i] *= second[i];
        }
        return first;
      }
      case LOHA_TUCKER: {
        double[] first = tuckerHalf(parts.get(HADA_T1), parts.get(HADA_W1_A), parts.get(HADA_W1_B));
        double[] second = tuckerHalf(parts.get(HADA_T2), parts.get(HADA_W2_A), parts.get(HADA_W2_B));
        for (int i = 0; i < first.length; i++) {
          first[i] *= second[i];
        }
        return first;
      }
      case LOKR:
        return lokr(parts);
      case FULL:
        return parts.get(DIFF).toDoubleArray();
      default:
        throw new AssertionError(kind);
    }
  }

  private static double[] lowRank(TensorData a, TensorData b) {
    int rank = Math.toIntExact(a.dim(1));
    return product(a.toDoubleArray(), false, b.toDoubleArray(), Math.toIntExact(a.dim(0)), rank, Math.toIntExact(b.numel() / rank));
  }

  /** w1 ⊗ w2 (torch.kron), with w2 flattened to [c, d·kh·kw]: row i1·c+i2, column j1·d·kk+j2. */
  private static double[] lokr(Map<String, TensorData> parts) {
    double[] w1;
    int a;
    int b;
    if (parts.containsKey(LOKR_W1)) {
      w1 = parts.get(LOKR_W1).toDoubleArray();
      a = Math.toIntExact(parts.get(LOKR_W1).dim(0));
      b = Math.toIntExact(parts.get(LOKR_W1).dim(1));
    } else {
      w1 = lowRank(parts.get(LOKR_W1_A), parts.get(LOKR_W1_B));
      a = Math.toIntExact(parts.get(LOKR_W1_A).dim(0));
      b = Math.toIntExact(parts.get(LOKR_W1_B).dim(1));
    }
    double[] w2;
    int c;
    if (parts.containsKey(LOKR_W2)) {
      w2 = parts.get(LOKR_W2).toDoubleArray();
      c = Math.toIntExact(parts.get(LOKR_W2).dim(0));
    } else if (parts.containsKey(LOKR_T2)) {
      w2 = tuckerHalf(parts.get(LOKR_T2), parts.get(LOKR_W2_A), parts.get(LOKR_W2_B));
      c = Math.toIntExact(parts.get(LOKR_W2_A).dim(1));
    } else {
      w2 = lowRank(parts.get(LOKR_W2_A), parts.get(LOKR_W2_B));
      c = Math.toIntExact(parts.get(LOKR_W2_A).dim(0));
    }
    int columns2 = w2.length / c;
    int columns = Math.multiplyExact(b, columns2);
    double[] result = new double[Math.multiplyExact(Math.multiplyExact(a, c), columns)];
    for (int i1 = 0; i1 < a; i1++) {
      for (int i2 = 0; i2 < c; i2++) {
        int row = (i1 * c + i2) * columns;
        for (int j1 = 0; j1 < b; j1++) {
          double value = w1[i1 * b + j1];
          int column = row + j1 * columns2;
          for (int j2 = 0; j2 < columns2; j2++) {
            result[column + j2] = value * w2[i2 * columns2 + j2];
          }
        }
      }
    }
    return result;
  }

  /**
   * {@code m / (‖V‖ + ε) · V} for V = {@code values} [out, inner], the norm per output row or per
   * input channel (columns {@code j·kernel … j·kernel + kernel − 1} of every row, kernel =
   * inner / count); the factor is computed first, as LyCORIS and PEFT do.
   */
  static double[] renormalise(double[] values, int out, DoraMagnitude magnitude) {
    double[] m = magnitude.values().toDoubleArray();
    int inner = values.length / out;
    double[] result = new double[values.length];
    if (magnitude.perOutput()) {
      for (int o = 0; o < out; o++) {
        double sum = 0;
        for (int i = 0; i < inner; i++) {
          sum += values[o * inner + i] * values[o * inner + i];
        }
        double factor = m[o] / (Math.sqrt(sum) + magnitude.epsilon());
        for (int i = 0; i < inner; i++) {
          result[o * inner + i] = values[o * inner + i] * factor;
        }
      }
      return result;
    }
    int channels = m.length;
    int kernel = inner / channels;
    double[] sums = new double[channels];
    for (int o = 0; o < out; o++) {
      for (int i = 0; i < inner; i++) {
        double value = values[o * inner + i];
        sums[i / kernel] += value * value;
      }
    }
    double[] factors = new double[channels];
    for (int j = 0; j < channels; j++) {
      factors[j] = m[j] / (Math.sqrt(sums[j]) + magnitude.epsilon());
    }
    for (int o = 0; o < out; o++) {
      for (int i = 0; i < inner; i++) {
        result[o * inner + i] = values[o * inner + i] * factors[i / kernel];
      }
    }
    return result;
  }

  private static void expect(ModuleKey key, boolean condition, String expected, Map<String, TensorData> parts) {
    if (!condition) {
      StringBuilder found = new StringBuilder();
      parts.forEach((name, tensor) -> found.append(found.length() == 0 ? "" : ", ").append(name).append(' ')
          .append(Arrays.toString(tensor.shape())));
      throw new LoraMergeException(
          String.format(Locale.ROOT, "module '%s': found %s, expected %s", key, found, expected));
    }
  }
}

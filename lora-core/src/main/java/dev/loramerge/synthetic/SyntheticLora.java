package dev.loramerge.synthetic;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.errorprone.annotations.CanIgnoreReturnValue;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.TensorData;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.internal.linalg.Randoms;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.function.Predicate;

/**
 * Seeded LoRA adapters shaped like a real architecture's, for demos, tests and benchmarks.
 *
 * <p>Each module draws from its own generator keyed by the seed and the module key, so a module's
 * factors do not depend on which other modules were chosen. A is Gaussian with variance 1/in
 * (as Kaiming-style initialisation would give), B Gaussian with standard deviation {@code
 * upScale}: a trained LoRA's B has moved away from zero by about that much.
 *
 * <pre>{@code
 * LoraAdapter style = SyntheticLora.builder(Architecture.sdxl())
 *     .modules(spec -> spec.kind() == LoraModule.Kind.LINEAR && spec.key().component() == Component.UNET)
 *     .rank(32).alpha(16).seed(1).build();
 * }</pre>
 */
public final class SyntheticLora {
  private SyntheticLora() {}

  /**
   * A seeded base weight for {@code spec} in {@code dtype}, with the shape the real model has and
   * entries of standard deviation 1/√fan-in, as PyTorch initializes layers; stored under {@code
   * <path>.weight} it makes a base model that fuses exactly like the real one.
   */
  public static TensorData baseWeight(ModuleSpec spec, DType dtype, long seed) {
    SplittableRandom random = new SplittableRandom(Randoms.streamSeed(seed, spec.key().toString(), 0, "base"));
    double deviation = 1 / Math.sqrt(spec.inFeatures() * spec.kernelSize() * spec.kernelSize());
    return gaussian(random, deviation, dtype, spec.weightShape());
  }

  private static TensorData gaussian(SplittableRandom random, double deviation, DType dtype, long[] shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = Randoms.standardNormal(random) * deviation;
    }
    return TensorData.ofDoubles(values, dtype, shape);
  }

  /** A builder for an adapter over {@code architecture}'s modules. */
  public static Builder builder(Architecture architecture) {
    return new Builder(checkNotNull(architecture, "architecture"));
  }

  /** Chooses modules, rank, alpha, dtype and seed; not thread-safe. */
  public static final class Builder {
    private final Architecture architecture;
    private Predicate<ModuleSpec> modules = spec -> true;
    private int rank = 4;
    private double alpha = 4;
    private DType dtype = DType.F32;
    private long seed = 1;
    private double upScale = 0.01;
    private String name = "synthetic";

    private Builder(Architecture architecture) {
      this.architecture = architecture;
    }

    /** Which of the architecture's modules the adapter targets (default: all). */
    @CanIgnoreReturnValue
    public Builder modules(Predicate<ModuleSpec> modules) {
      this.modules = checkNotNull(modules, "modules");
      return this;
    }

    /** The rank of every module (default 4). */
    @CanIgnoreReturnValue
    public Builder rank(int rank) {
      checkArgument(rank > 0, "rank must be positive, got %s", rank);
      this.rank = rank;
      return this;
    }

    /** The alpha of every module (default 4). */
    @CanIgnoreReturnValue
    public Builder alpha(double alpha) {
      checkArgument(Double.isFinite(alpha), "alpha must be finite, got %s", alpha);
      this.alpha = alpha;
      return this;
    }

    /** The factors' element type (default F32). */
    @CanIgnoreReturnValue
    public Builder dtype(DType dtype) {
      checkArgument(dtype == DType.F32 || dtype == DType.F16 || dtype == DType.BF16 || dtype == DType.F64,
          "factors must be F64, F32, F16 or BF16, got %s", dtype);
      this.dtype = dtype;
      return this;
    }

    /** The seed (default 1). */
    @CanIgnoreReturnValue
    public Builder seed(long seed) {
      this.seed = seed;
      return this;
    }

    /** The standard deviation of B's entries (default 0.01). */
    @CanIgnoreReturnValue
    public Builder upScale(double upScale) {
      checkArgument(upScale > 0 && Double.isFinite(upScale), "upScale must be positive, got %s", upScale);
      this.upScale = upScale;
      return this;
    }

    /** The adapter's name (default "synthetic"). */
    @CanIgnoreReturnValue
    public Builder name(String name) {
      this.name = checkNotNull(name, "name");
      return this;
    }

    /** The adapter, with its recipe in the metadata. */
    public LoraAdapter build() {
      LoraAdapter.Builder adapter = LoraAdapter.builder().name(name);
      for (ModuleSpec spec : architecture.modules().values()) {
        if (!modules.test(spec)) {
          continue;
        }
        SplittableRandom random = new SplittableRandom(Randoms.streamSeed(seed, spec.key().toString(), 0, "synthetic"));
        long inner = spec.inFeatures() * spec.kernelSize() * spec.kernelSize();
        long[] downShape =
            spec.kind() == LoraModule.Kind.CONV
                ? new long[] {rank, spec.inFeatures(), spec.kernelSize(), spec.kernelSize()}
                : new long[] {rank, spec.inFeatures()};
        long[] upShape =
            spec.kind() == LoraModule.Kind.CONV
                ? new long[] {spec.outFeatures(), rank, 1, 1}
                : new long[] {spec.outFeatures(), rank};
        TensorData down = gaussian(random, 1 / Math.sqrt(inner), dtype, downShape);
        TensorData up = gaussian(random, upScale, dtype, upShape);
        adapter.add(LoraModule.of(spec.key(), down, up, alpha));
      }
      adapter.putMetadata(
          "loramerge_synthetic",
          String.format(
              Locale.ROOT,
              "{\"architecture\":\"%s\",\"rank\":%d,\"alpha\":%s,\"dtype\":\"%s\",\"seed\":%d,\"up_scale\":%s}",
              architecture.id(),
              rank,
              alpha,
              dtype.safetensorsName(),
              seed,
              upScale));
      return adapter.build();
    }
  }
}

package dev.loramerge.bench;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.internal.linalg.FactoredSvd;
import dev.loramerge.internal.linalg.RandomizedSvd;
import dev.loramerge.internal.linalg.Randoms;
import java.util.SplittableRandom;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Re-ranking one module's merged update to the target rank, for the SDXL layer shapes (rows ×
 * columns of the weight). Two rank-{@code rank} adapters (weights 0.7 and 0.5, scales 1 and 0.5)
 * stacked along the rank as {@code cat} leaves them, B̂ (m×2r) and Â (2r×n), are truncated three
 * ways:
 *
 * <ul>
 *   <li>{@code factored}: the exact factored SVD the merger runs for {@code svd} ({@link
 *       FactoredSvd#truncate}, O((m+n)·r²) in Java, the m×n product never formed; it makes no
 *       native call, so {@code device} does not apply);
 *   <li>{@code materialize}: PEFT's way, ΔW = Σ wᵢ·sᵢ·BᵢAᵢ as one m×n product, then the
 *       library's exact dense SVD ({@link RandomizedSvd#exact}, EJML in float64,
 *       O(m·n·min(m, n))): what {@code factored} saves;
 *   <li>{@code randomized}: the randomized SVD ({@link RandomizedSvd#truncate}) of that dense ΔW,
 *       which re-ranks the dense updates of the {@code *_svd} methods.
 * </ul>
 *
 * <p>The products run on {@code device} ({@code gpu} only where DJL sees one), the decompositions
 * in EJML on the host. {@code materialize} takes seconds to minutes an operation on the large
 * shapes: limit it with {@code -p shape=640x640}.
 *
 * <p>{@code factored} takes milliseconds an operation on every shape, {@code materialize} up to a
 * minute (at 1280×1280: a few milliseconds against 5.5 s). When another process competes for the
 * cores, pass {@code -jvmArgsAppend -Dai.djl.pytorch.num_threads=1}: libtorch's default intra-op
 * threads then make the small products 10 to 30 times slower. Recorded results are in
 * docs/performance-history.md.
 */
public class SvdKernel extends Kernel {
  @Param({"640x640", "1280x1280", "640x2048", "1280x10240", "5120x1280"})
  String shape;

  @Param({"cpu"})
  String device;

  @Param({"32"})
  int rank;

  private NDManager manager;
  private NDArray up;
  private NDArray down;
  private NDArray dense;
  private float[] upValues;
  private float[] downValues;

  @Setup(Level.Trial)
  public void setUp() {
    manager = NDManager.newBaseManager(KernelParams.device(device));
    long[] dims = KernelParams.shape(shape);
    SplittableRandom random = new SplittableRandom(1);
    // Each adapter's w·s is folded into its B, as the merger's cat does; A's rows have unit norm
    // on average, B's entries are small, as trained LoRAs' are.
    double downDeviation = 1 / Math.sqrt(dims[1]);
    up =
        NDArrays.concat(
            new NDList(
                gaussian(random, dims[0], rank, 0.01 * 0.7 * 1.0), gaussian(random, dims[0], rank, 0.01 * 0.5 * 0.5)),
            1);
    down =
        NDArrays.concat(
            new NDList(gaussian(random, rank, dims[1], downDeviation), gaussian(random, rank, dims[1], downDeviation)),
            0);
    dense = up.matMul(down);
    upValues = up.toFloatArray();
    downValues = down.toFloatArray();
  }

  /** A float32 rows×columns array of N(0, deviation²) draws, owned by {@link #manager}. */
  private NDArray gaussian(SplittableRandom random, long rows, long columns, double deviation) {
    float[] values = new float[Math.toIntExact(rows * columns)];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) (Randoms.standardNormal(random) * deviation);
    }
    return manager.create(values, new Shape(rows, columns));
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    manager.close();
  }

  @Benchmark
  public double[][] factored() {
    return FactoredSvd.truncate(upValues, downValues, 2 * rank, sigma -> rank);
  }

  @Benchmark
  public long materialize() {
    try (NDManager scope = manager.newSubManager()) {
      scope.tempAttachAll(up, down);
      return RandomizedSvd.exact(scope, up.matMul(down), sigma -> rank)[0].getShape().get(1);
    }
  }

  @Benchmark
  public long randomized() {
    try (NDManager scope = manager.newSubManager()) {
      scope.tempAttachAll(dense);
      return RandomizedSvd.truncate(scope, dense, rank, sigma -> rank, new RandomizedSvd.Sketches(1))[0].getShape().get(1);
    }
  }
}

package dev.loramerge.bench;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.Architecture;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMerger;
import dev.loramerge.ModuleKey;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethods;
import dev.loramerge.internal.RandomizedSvd;
import java.util.OptionalDouble;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * One SDXL module (a 1280×1280 attention projection or the 1280→10240 GEGLU projection) merged
 * from two rank-32 adapters by each method: factored SVD ({@code svd}) against
 * materialize-and-decompose ({@code svd} with the exact dense SVD: {@code denseExactSvd}),
 * magnitude top-k ({@code magnitude_prune}), TIES elect-and-merge ({@code ties}), DARE masks
 * ({@code dare_linear}), and the randomized SVD of one dense delta.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = {"-Dai.djl.offline=true", "-Xmx4g", "-XX:MaxDirectMemorySize=8g"})
public class MergeKernel {
  @Param({"down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q",
      "down_blocks.2.attentions.0.transformer_blocks.0.ff.net.0.proj"})
  String module;

  @Param({"cat", "svd", "ties", "dare_linear", "magnitude_prune", "ties_svd"})
  String method;

  private LoraMerger merger;
  private LoraMerger denseExact;
  private NDManager manager;
  private NDArray dense;

  @Setup(Level.Trial)
  public void setUp() {
    ModuleKey key = ModuleKey.parse("unet." + module);
    LoraAdapter style = only(SdxlData.adapter("style", 32, 32, 1), key);
    LoraAdapter subject = only(SdxlData.adapter("subject", 32, 16, 2), key);
    merger =
        LoraMerger.builder().add(style, 0.7).add(subject, 0.5).threads(1).rank(32)
            .algorithm(MergeMethods.named(method, OptionalDouble.of(0.5), MajoritySign.TOTAL, 0))
            .build();
    denseExact = merger.toBuilder().exactSvd(true).build();
    manager = NDManager.newBaseManager();
    long[] shape = Architecture.sdxl().module(key).orElseThrow().weightShape();
    dense = manager.randomNormal(new Shape(shape[0], shape[1])).toType(DataType.FLOAT32, false);
  }

  private static LoraAdapter only(LoraAdapter adapter, ModuleKey key) {
    return LoraAdapter.builder().name(adapter.name()).add(adapter.modules().get(key)).build();
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    manager.close();
  }

  @Benchmark
  public LoraAdapter merge() {
    return merger.merge();
  }

  /** The same merge with every dense re-rank done by an exact SVD. */
  @Benchmark
  public LoraAdapter mergeExactSvd() {
    return denseExact.merge();
  }

  @Benchmark
  public long randomizedSvd() {
    try (NDManager scope = manager.newSubManager()) {
      NDArray[] factors = RandomizedSvd.truncate(scope, dense, 32, sigma -> 32, new SplittableRandom(1));
      return factors[0].getShape().get(1);
    }
  }
}

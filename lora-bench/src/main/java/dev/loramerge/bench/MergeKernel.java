package dev.loramerge.bench;

import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethod;
import dev.loramerge.merge.LoraMerger;
import java.util.OptionalDouble;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;

/**
 * One SDXL module (a 1280×1280 attention projection or the 1280→10240 GEGLU projection) merged
 * from two rank-32 adapters by each method, everything the merger does for one module included:
 * {@code merge} as configured, and {@code mergeExactSvd} with the dense re-rank of the {@code
 * *_svd} methods done by the exact SVD instead of the randomized one (only they have a dense
 * update: for the other methods the two are the same merge; {@code svd} re-ranks the factors).
 * {@link SvdKernel} and {@link TaskTensorKernel} measure the kernels inside on their own.
 *
 * <p>{@code device} is the merger's ({@link LoraMerger.Builder#device}): {@code gpu} runs its
 * products there where DJL sees a GPU, and stops in the set-up with an {@link
 * IllegalStateException} where it sees none. The merged factors come back to host memory either
 * way, as the merger returns them.
 */
public class MergeKernel extends Kernel {
  @Param({"down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q",
      "down_blocks.2.attentions.0.transformer_blocks.0.ff.net.0.proj"})
  String module;

  @Param({"cat", "svd", "ties", "dare_linear", "magnitude_prune", "ties_svd"})
  String method;

  @Param({"cpu"})
  String device;

  private LoraMerger merger;
  private LoraMerger denseExact;

  @Setup(Level.Trial)
  public void setUp() {
    ModuleKey key = ModuleKey.parse("unet." + module);
    LoraAdapter style = only(SdxlData.adapter("style", 32, 32, 1), key);
    LoraAdapter subject = only(SdxlData.adapter("subject", 32, 16, 2), key);
    merger =
        LoraMerger.builder().add(style, 0.7).add(subject, 0.5).threads(1).rank(32).device(KernelParams.device(device))
            .algorithm(MergeMethod.parse(method).create(OptionalDouble.of(0.5), MajoritySign.TOTAL, 0))
            .build();
    denseExact = merger.toBuilder().exactSvd(true).build();
  }

  private static LoraAdapter only(LoraAdapter adapter, ModuleKey key) {
    return LoraAdapter.builder().name(adapter.name()).add(adapter.modules().get(key)).build();
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
}

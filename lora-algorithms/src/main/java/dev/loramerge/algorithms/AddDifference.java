package dev.loramerge.algorithms;

import static com.google.common.base.Preconditions.checkArgument;

import ai.djl.ndarray.NDManager;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.spi.ModuleInput;
import dev.loramerge.merge.spi.ModuleMerge;
import dev.loramerge.merge.spi.ModuleUpdate;
import dev.loramerge.merge.spi.Offer;
import java.util.Locale;

/**
 * Add difference, A + f·(B − C) (SuperMerger, sd-mecha), on three adapters' updates: each
 * module's result is w_A·Δ_A + f·(w_B·Δ_B − w_C·Δ_C), exact: {@link Cat} of the inputs with their
 * weights times 1, f and −f (a module missing from an adapter contributes nothing). Ranks may
 * differ.
 *
 * @param factor the multiplier f of the difference, finite
 */
public record AddDifference(double factor) implements MergeAlgorithm {
  /** Checks the factor. */
  public AddDifference {
    checkArgument(Double.isFinite(factor), "factor must be finite, got %s", factor);
  }

  /** A + {@code factor}·(B − C). */
  public static AddDifference of(double factor) {
    return new AddDifference(factor);
  }

  @Override
  public String name() {
    return "add_difference";
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return ImmutableMap.of("factor", factor);
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    ImmutableList.Builder<ModuleInput> signed = ImmutableList.builder();
    for (ModuleInput input : module.inputs()) {
      signed.add(new Signed(input, sign(input.index())));
    }
    return MergeAlgorithm.cat().merge(new Inputs(module, signed.build()));
  }

  private double sign(int index) {
    switch (index) {
      case 0:
        return 1;
      case 1:
        return factor;
      case 2:
        return -factor;
      default:
        throw new LoraMergeException(
            String.format(Locale.ROOT, "add_difference takes three adapters (A, B, C), got input %d", index + 1));
    }
  }

  @Override
  public String toString() {
    return "AddDifference{factor=" + factor + "}";
  }

  /** An input whose weight is multiplied by {@code sign}. */
  private record Signed(ModuleInput input, double sign) implements ModuleInput {
    @Override
    public int index() {
      return input.index();
    }

    @Override
    public LoraModule module() {
      return input.module();
    }

    @Override
    public double weight() {
      return sign * input.weight();
    }

    @Override
    public double scale() {
      return input.scale();
    }

    @Override
    public void readUp(int first, float[] out, int count) {
      input.readUp(first, out, count);
    }

    @Override
    public void readDown(int first, float[] out, int count) {
      input.readDown(first, out, count);
    }

    @Override
    public void readUp(int first, double[] out, int count) {
      input.readUp(first, out, count);
    }

    @Override
    public void readDown(int first, double[] out, int count) {
      input.readDown(first, out, count);
    }

    @Override
    public float[] delta() {
      return input.delta();
    }
  }

  /** {@code module} with other inputs. */
  private record Inputs(ModuleMerge module, ImmutableList<ModuleInput> inputs) implements ModuleMerge {
    @Override
    public ModuleKey key() {
      return module.key();
    }

    @Override
    public Offer offer() {
      return module.offer();
    }

    @Override
    public NDManager manager() {
      return module.manager();
    }

    @Override
    public int targetRank() {
      return module.targetRank();
    }

    @Override
    public long streamSeed(long seed, int adapterIndex, String stream) {
      return module.streamSeed(seed, adapterIndex, stream);
    }
  }
}

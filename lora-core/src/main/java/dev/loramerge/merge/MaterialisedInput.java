package dev.loramerge.merge;

import dev.loramerge.LoraModule;
import dev.loramerge.merge.spi.ModuleInput;
import java.util.Locale;
import java.util.function.Supplier;

/**
 * One input's module in a kind without LoRA factors (LoHa, LoKr, a full difference, DoRA), as a
 * method on the full updates sees it: its update materialised in float64 and rounded once to
 * float32, the value a LoRA with the same product gives (s·B·A is exact in float32 there too).
 * It has no factors to read. The update is built when asked for, so that a merge holds no more
 * than the module's updates.
 */
final class MaterialisedInput implements ModuleInput {
  private final int index;
  private final LoraModule module;
  private final double weight;
  private final Supplier<double[]> update;

  /**
   * @param weight the weight the method applies: wᵢ, or 1 for an update that has its weight in
   *     it (DoRA's DoRA(W) − W, with w inside the norm)
   * @param update the full update, row-major out×in·k·k, in float64
   */
  MaterialisedInput(int index, LoraModule module, double weight, Supplier<double[]> update) {
    this.index = index;
    this.module = module;
    this.weight = weight;
    this.update = update;
  }

  @Override
  public int index() {
    return index;
  }

  @Override
  public LoraModule module() {
    return module;
  }

  @Override
  public double weight() {
    return weight;
  }

  @Override
  public void readUp(int first, float[] out, int count) {
    throw noFactors();
  }

  @Override
  public void readDown(int first, float[] out, int count) {
    throw noFactors();
  }

  @Override
  public void readUp(int first, double[] out, int count) {
    throw noFactors();
  }

  @Override
  public void readDown(int first, double[] out, int count) {
    throw noFactors();
  }

  @Override
  public float[] delta() {
    double[] values = update.get();
    float[] rounded = new float[values.length];
    for (int i = 0; i < values.length; i++) {
      rounded[i] = (float) values[i];
    }
    return rounded;
  }

  // Only a method that declares it reads full updates is handed this input; reading factors here
  // is a method's bug, not bad input.
  private IllegalStateException noFactors() {
    return new IllegalStateException(
        String.format(Locale.ROOT, "module '%s' is a %s and has no LoRA factors, only its full update", module.key(),
            module.kindName()));
  }
}

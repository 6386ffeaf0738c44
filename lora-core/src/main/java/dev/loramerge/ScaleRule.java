package dev.loramerge;

/** How a module's alpha and rank give the scale of its update s·B·A. */
public enum ScaleRule {
  /** s = α / r, the rule of the LoRA paper, kohya and PEFT by default. */
  STANDARD,
  /** s = α / √r, rank-stabilized LoRA (PEFT {@code use_rslora}). */
  RSLORA;

  /** The scale for {@code alpha} and {@code rank}. */
  public double scale(double alpha, int rank) {
    return this == STANDARD ? alpha / rank : alpha / Math.sqrt(rank);
  }

  /** The alpha that gives scale {@code scale} at {@code rank}. */
  public double alphaFor(double scale, int rank) {
    return this == STANDARD ? scale * rank : scale * Math.sqrt(rank);
  }
}

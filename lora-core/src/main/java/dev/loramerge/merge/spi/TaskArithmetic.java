package dev.loramerge.merge.spi;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

/**
 * An element-wise merge of full updates described instead of run, so that the merger can run it
 * where the updates are made, on a GPU, for many modules at once, with the bits the method's own
 * {@link dev.loramerge.merge.MergeAlgorithm#merge merge} gives on the host:
 *
 * <ol>
 *   <li>each input's update s·B·A, entry (i, j) the float32 fused multiply-adds bᵢₖ·aₖⱼ in
 *       increasing k from +0, then times s in float32 (what {@link ModuleInput#delta()} computes
 *       for a LoRA);
 *   <li>pruned: {@link Prune#MAGNITUDE} keeps the ⌊density·n⌋ entries of largest magnitude (of
 *       equal ones, the first; NaN never), {@link Prune#RANDOM} keeps entry i where the (i+1)-th
 *       {@code nextDouble()} of {@code module.random(seed, input, STREAM)} is below density and
 *       divides it by density in float64, {@link Prune#OUTLIERS} keeps what {@code MAGNITUDE}
 *       keeps of ⌊gamma·n⌋ + ⌊density·n⌋ entries (⌊gamma·n⌋ at most n − ⌊density·n⌋), less the
 *       entries other than zero that it keeps of ⌊gamma·n⌋ (Model Breadcrumbs), {@link
 *       Prune#RANKED} ranks each row's c entries by magnitude (NaN above infinity, equal ones by
 *       column) and gives rank r (0 the smallest) the probability p = (density − epsilon) + (2·epsilon·r)/(c − 1)
 *       in float64 (density where c = 1), clamped to [0, 1], keeping the entry where p > 0 and
 *       its {@code nextDouble()} of {@code module.random(seed, input, STREAM)} is below p, divided
 *       by p in float64; the draws are made only where p > 0, row by row, in increasing rank
 *       (DELLA's MagPrune); a dropped entry is +0;
 *   <li>combined with the inputs' weights in float64 and rounded once to float32: {@link
 *       Combine#SUM} Σ wₜ·xₜ, or TIES' sign election ({@link Combine#TOTAL_SIGN}: the sign of Σ xₜ,
 *       {@link Combine#FREQUENCY_SIGN}: of Σ sign(xₜ); zero elects +) and the mean of the weighted
 *       entries of that sign.
 * </ol>
 *
 * @param prune how each input's update is pruned
 * @param density the fraction kept, in (0, 1]; 1 where nothing is pruned
 * @param gamma the fraction dropped as outliers, in [0, 1); 0 for the other prunings
 * @param epsilon the spread of the ranked pruning's probabilities, density ± epsilon within [0, 1];
 *     0 for the other prunings
 * @param seed the random prunings' seed; 0 for the others
 * @param combine how the pruned updates are combined
 */
public record TaskArithmetic(Prune prune, double density, double gamma, double epsilon, long seed, Combine combine) {
  /** The name of the random stream an input's update is pruned with ({@link ModuleMerge#streamSeed}). */
  public static final String STREAM = "delta";

  /** How each input's update is pruned. */
  public enum Prune {
    /** Nothing is pruned. */
    NONE,
    /** The entries of largest magnitude are kept. */
    MAGNITUDE,
    /** Each entry is kept with probability density, and rescaled (DARE). */
    RANDOM,
    /** The entries of largest magnitude after the largest of all, the outliers. */
    OUTLIERS,
    /** Each entry kept with a probability rising with its magnitude's rank in its row (DELLA). */
    RANKED
  }

  /** How the pruned updates are combined. */
  public enum Combine {
    /** The weighted sum. */
    SUM,
    /** TIES, the sign elected by the sum of the entries. */
    TOTAL_SIGN,
    /** TIES, the sign elected by the count of the entries' signs. */
    FREQUENCY_SIGN
  }

  /** Checks the parameters. */
  public TaskArithmetic {
    checkNotNull(prune, "prune");
    checkNotNull(combine, "combine");
    checkArgument(density > 0 && density <= 1, "density must be in (0, 1], got %s", density);
    checkArgument(prune != Prune.NONE || density == 1, "nothing pruned keeps a density of 1, got %s", density);
    checkArgument(gamma >= 0 && gamma < 1 && (prune == Prune.OUTLIERS || gamma == 0), "gamma %s with %s", gamma, prune);
    checkArgument(epsilon >= 0 && epsilon <= density && density + epsilon <= 1 && (prune == Prune.RANKED || epsilon == 0),
        "epsilon %s with %s at density %s", epsilon, prune, density);
  }
}

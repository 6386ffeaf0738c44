package dev.loramerge.merge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.LoraModule;
import java.util.Optional;

/**
 * How a merge chooses and reaches the rank of its modules: the explicit target ranks, the rule
 * that may choose fewer, the SVD that truncates dense updates, and PEFT's {@code svd_clamp}.
 *
 * <p>Without an explicit rank the target is the largest input rank, and only re-ranked results
 * (the {@code *_svd} methods and dense updates) are truncated; with one, any result of a higher
 * rank is.
 *
 * @param rank the target rank of re-ranked results; empty for the largest input rank
 * @param convRank a separate target rank for k×k convolutions; empty for {@code rank}
 * @param rule how re-ranked modules choose their rank, capped at the target
 * @param exactSvd whether dense updates are truncated by an exact SVD instead of the randomized one
 * @param svdClamp the quantile at which re-ranked factors are clipped; empty for none
 */
public record RankPolicy(
    Optional<Integer> rank, Optional<Integer> convRank, RankRule rule, boolean exactSvd, Optional<Double> svdClamp) {
  private static final RankPolicy DEFAULT =
      new RankPolicy(Optional.empty(), Optional.empty(), RankRule.fixed(), false, Optional.empty());

  /** Validates. */
  public RankPolicy {
    checkNotNull(rank, "rank");
    checkNotNull(convRank, "convRank");
    checkNotNull(rule, "rule");
    checkNotNull(svdClamp, "svdClamp");
    rank.ifPresent(value -> checkArgument(value > 0, "rank must be positive, got %s", value));
    convRank.ifPresent(value -> checkArgument(value > 0, "convRank must be positive, got %s", value));
    svdClamp.ifPresent(
        value -> checkArgument(value > 0 && value <= 1, "svd clamp quantile must be in (0, 1], got %s", value));
  }

  /** The largest input rank, the fixed rule, the randomized SVD and no clamp. */
  public static RankPolicy defaults() {
    return DEFAULT;
  }

  /** The explicit target rank of a module of {@code kind}, if any. */
  public Optional<Integer> explicitRank(LoraModule.Kind kind) {
    return kind == LoraModule.Kind.CONV && convRank.isPresent() ? convRank : rank;
  }

  /** The rank {@link #rule} keeps of singular values {@code sigma}, capped at {@code target}. */
  int rank(double[] sigma, int target) {
    return rule.rank(sigma, target);
  }
}

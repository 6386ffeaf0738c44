package dev.loramerge.merge.spi;

import static com.google.common.base.Preconditions.checkNotNull;

import dev.loramerge.DType;
import java.util.Optional;

/**
 * What the merger does with one module's update, so that an algorithm can give it in the form
 * that saves work: every form of {@link ModuleUpdate} is taken either way, and gives the same
 * result, short of the copies and roundings an offer saves.
 *
 * @param precision the precision the merger carries the update on in
 * @param encoding the type the merger writes the factors in when it does nothing more to them (a
 *     merge whose result is neither re-ranked nor truncated), for {@link ModuleUpdate.Encoded};
 *     empty otherwise, and in a fuse
 */
public record Offer(Precision precision, Optional<DType> encoding) {
  /** The precision a merge carries its update on in. */
  public enum Precision {
    /**
     * The update is rounded to float32 or narrower: {@link ModuleUpdate.Factors} or {@link
     * ModuleUpdate.Dense} lose nothing.
     */
    FLOAT32,
    /**
     * A fuse with a method that is {@linkplain dev.loramerge.merge.MergeAlgorithm.Requirements#exactInFloat64()
     * exact in float64} adds the update in float64: such a method reads its inputs in float64 and
     * gives {@link ModuleUpdate.DoubleFactors}, as float32 values would lose what it keeps.
     */
    FLOAT64
  }

  /** Checks that both are given. */
  public Offer {
    checkNotNull(precision, "precision");
    checkNotNull(encoding, "encoding");
  }
}

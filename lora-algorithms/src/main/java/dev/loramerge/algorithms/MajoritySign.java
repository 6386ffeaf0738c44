package dev.loramerge.algorithms;

import java.util.Locale;
import java.util.Optional;

/** How TIES elects the sign of each entry. */
public enum MajoritySign {
  /** The sign of the sum of the (pruned, unweighted) entries; zero counts as positive. */
  TOTAL,
  /** The sign of the sum of the entries' signs, i.e. the more frequent sign. */
  FREQUENCY;

  /** PEFT's name: {@code total} or {@code frequency}. */
  public String peftName() {
    return name().toLowerCase(Locale.ROOT);
  }

  /** The method PEFT calls {@code name}. */
  public static Optional<MajoritySign> fromPeftName(String name) {
    for (MajoritySign sign : values()) {
      if (sign.peftName().equals(name)) {
        return Optional.of(sign);
      }
    }
    return Optional.empty();
  }
}

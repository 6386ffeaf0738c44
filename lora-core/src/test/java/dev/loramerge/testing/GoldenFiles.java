package dev.loramerge.testing;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Finds the PEFT 0.21 reference outputs ({@code shared/golden/peft-0.21}), which sit beside the
 * repository: walks up from the working directory until a {@code shared/golden} folder appears.
 * Tests fail, rather than skip, when it is missing: the golden set is part of the contract.
 */
public final class GoldenFiles {
  private GoldenFiles() {}

  /** The {@code peft-0.21} folder. */
  public static Path peft021() {
    Path dir = Path.of(System.getProperty("user.dir")).toAbsolutePath();
    for (Path candidate = dir; candidate != null; candidate = candidate.getParent()) {
      Path golden = candidate.resolve("shared/golden/peft-0.21");
      if (Files.isDirectory(golden)) {
        return golden;
      }
    }
    throw new IllegalStateException(
        "shared/golden/peft-0.21 not found above " + dir + "; the tests need ../shared beside the repository");
  }

  /** A file or folder inside {@code peft-0.21}. */
  public static Path peft021(String relative) {
    return peft021().resolve(relative);
  }
}

package dev.loramerge.testing;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Finds the PEFT 0.21 reference outputs the tests compare with: the repository's {@code
 * testdata/peft-0.21} (see {@code testdata/README.md}). Maven's test runs name the folder in the
 * {@code loramerge.testdata} system property; elsewhere (an IDE) it is looked up from the working
 * directory through the folders of the Maven project, never above them. Tests fail, rather than
 * skip, when it is missing: the reference set is part of the contract.
 */
public final class GoldenFiles {
  private static final String PROPERTY = "loramerge.testdata";
  private static final String FOLDER = "peft-0.21";

  private GoldenFiles() {}

  /** The {@code peft-0.21} folder. */
  public static Path peft021() {
    String configured = System.getProperty(PROPERTY);
    if (configured != null) {
      Path golden = Path.of(configured).toAbsolutePath().normalize().resolve(FOLDER);
      if (!Files.isDirectory(golden)) {
        throw new IllegalStateException(PROPERTY + " names " + configured + ", which holds no " + FOLDER + " folder");
      }
      return golden;
    }
    Path start = Path.of(System.getProperty("user.dir")).toAbsolutePath();
    for (Path candidate = start; candidate != null && Files.isRegularFile(candidate.resolve("pom.xml")); candidate = candidate.getParent()) {
      Path golden = candidate.resolve("testdata").resolve(FOLDER);
      if (Files.isDirectory(golden)) {
        return golden;
      }
    }
    throw new IllegalStateException(
        "testdata/" + FOLDER + " not found in the Maven project around " + start + "; set -D" + PROPERTY + "=REPOSITORY/testdata");
  }

  /** A file or folder inside {@code peft-0.21}. */
  public static Path peft021(String relative) {
    return peft021().resolve(relative);
  }
}

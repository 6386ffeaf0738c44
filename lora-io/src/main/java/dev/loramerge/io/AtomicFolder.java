package dev.loramerge.io;

import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.SecureRandom;
import java.util.List;

/**
 * Writes a folder of files so that no reader ever sees it half-written: everything goes into a
 * staging folder beside the target, then each file is renamed into place.
 */
final class AtomicFolder {
  /** Writes the files of one folder into {@code staging}. */
  interface Contents {
    void writeInto(Path staging) throws IOException;
  }

  private AtomicFolder() {}

  /**
   * Writes {@code contents} and moves {@code files} into {@code folder} (created if missing).
   * On failure the staging folder is removed and {@code folder} is unchanged.
   */
  static void write(Path folder, Contents contents, List<String> files) throws IOException {
    Path absolute = folder.toAbsolutePath();
    Path parent = absolute.getParent();
    Files.createDirectories(parent);
    if (Files.exists(absolute) && !Files.isDirectory(absolute)) {
      throw new IOException(folder + ": exists and is not a folder");
    }
    // Not createTempDirectory: its owner-only permissions would become the output folder's.
    Path staging =
        Files.createDirectory(
            parent.resolve("." + absolute.getFileName() + "." + Long.toHexString(new SecureRandom().nextLong()) + ".tmp"));
    try {
      contents.writeInto(staging);
      if (!Files.exists(absolute)) {
        try {
          Files.move(staging, absolute, StandardCopyOption.ATOMIC_MOVE);
          return;
        } catch (AtomicMoveNotSupportedException | java.nio.file.FileAlreadyExistsException e) {
          Files.createDirectories(absolute);
        }
      }
      for (String file : files) {
        Files.move(
            staging.resolve(file),
            absolute.resolve(file),
            StandardCopyOption.ATOMIC_MOVE,
            StandardCopyOption.REPLACE_EXISTING);
      }
    } finally {
      deleteRecursively(staging);
    }
  }

  private static void deleteRecursively(Path path) throws IOException {
    if (!Files.exists(path)) {
      return;
    }
    if (Files.isDirectory(path)) {
      try (DirectoryStream<Path> children = Files.newDirectoryStream(path)) {
        for (Path child : children) {
          deleteRecursively(child);
        }
      }
    }
    Files.delete(path);
  }
}

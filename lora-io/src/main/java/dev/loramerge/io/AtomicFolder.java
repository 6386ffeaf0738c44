package dev.loramerge.io;

import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
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
    Path staging = TemporaryFiles.createFolder(absolute);
    try {
      contents.writeInto(staging);
    } catch (IOException e) {
      discard(staging, e);
      throw named(e, staging, absolute);
    } catch (Throwable t) {
      discard(staging, t);
      throw t;
    }
    TemporaryFiles.publish(staging, absolute, () -> moveIntoPlace(staging, absolute, files));
  }

  private static void discard(Path staging, Throwable failure) {
    try {
      TemporaryFiles.discard(staging);
    } catch (IOException e) {
      failure.addSuppressed(e);
    }
  }

  private static void moveIntoPlace(Path staging, Path folder, List<String> files) throws IOException {
    if (!Files.exists(folder)) {
      try {
        Files.move(staging, folder, StandardCopyOption.ATOMIC_MOVE);
        return;
      } catch (AtomicMoveNotSupportedException | FileAlreadyExistsException e) {
        Files.createDirectories(folder);
      }
    }
    for (String file : files) {
      Files.move(
          staging.resolve(file), folder.resolve(file), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
  }

  /**
   * {@code failure} with the output folder in place of the staging folder, which the user never
   * asked for (a full disk, say, is reported by the writer of a file inside it).
   */
  private static IOException named(IOException failure, Path staging, Path folder) {
    String message = failure.getMessage();
    if (message == null || !message.contains(staging.toString())) {
      return failure;
    }
    return new IOException(message.replace(staging.toString(), folder.toString()), failure);
  }
}

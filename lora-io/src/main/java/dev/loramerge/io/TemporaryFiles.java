package dev.loramerge.io;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.OptionalLong;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The temporary files and folders that outputs are written through, named {@code
 * .<output>.<pid>.<random>.lora-tmp} beside the output so that a leftover says which output it was
 * for and which process wrote it.
 *
 * <p>Each one is registered from its creation until it is published (renamed into place) or
 * deleted. A JVM shutdown hook deletes those still registered: SIGINT and SIGTERM run the hooks
 * before the JVM exits (with 130 or 143), so an interrupted write leaves nothing behind. A process
 * killed outright cannot clean up; the next write to the same output deletes the leftovers whose
 * process has ended, with a warning for each. A pid that is alive keeps its files, even if it now
 * belongs to another process: a stale file kept is harmless, a live one deleted is not.
 */
final class TemporaryFiles {
  static final String SUFFIX = ".lora-tmp";

  /** The middle of a temporary's name, between {@code .<output>.} and the suffix. */
  private static final Pattern PID_AND_RANDOM = Pattern.compile("([0-9]{1,18})\\.[0-9a-f]+");
  private static final Logger log = LoggerFactory.getLogger(TemporaryFiles.class);
  private static final long PID = ProcessHandle.current().pid();
  private static final SecureRandom RANDOM = new SecureRandom();
  /**
   * The registry, guarded by the class's lock, which the creations, publications and the hook
   * take so that the hook never misses a temporary nor deletes one after it became the output.
   */
  private static final Set<Path> live = new LinkedHashSet<>();

  private static boolean shuttingDown;

  static {
    try {
      Runtime.getRuntime().addShutdownHook(new Thread(TemporaryFiles::deleteLive, "lora-temporary-files"));
    } catch (IllegalStateException e) {
      // The JVM is already exiting: nothing may be written any more.
      shuttingDown = true;
    }
  }

  /** What moves a temporary's content into place. */
  interface Publication {
    void run() throws IOException;
  }

  private TemporaryFiles() {}

  /**
   * A new empty file beside {@code target}, registered; stale temporaries of {@code target} are
   * deleted first. Created with the default permissions, so that once renamed it looks like any
   * file the user writes.
   */
  static Path createFile(Path target) throws IOException {
    return create(target, false);
  }

  /** A new empty folder beside {@code target}, registered, as {@link #createFile}. */
  static Path createFolder(Path target) throws IOException {
    return create(target, true);
  }

  /**
   * Runs {@code publication}, which moves {@code temporary}'s content into place, then deletes
   * what is left of {@code temporary} and forgets it.
   *
   * @throws InterruptedIOException if the JVM is shutting down: the hook has deleted {@code
   *     temporary}, and nothing is published
   */
  static void publish(Path temporary, Path target, Publication publication) throws IOException {
    synchronized (TemporaryFiles.class) {
      if (shuttingDown) {
        throw new InterruptedIOException(target + ": not written: the process is exiting");
      }
      try {
        publication.run();
      } finally {
        live.remove(temporary);
        deleteRecursively(temporary);
      }
    }
  }

  /** Deletes {@code temporary}, a folder with its content, and forgets it. */
  static void discard(Path temporary) throws IOException {
    synchronized (TemporaryFiles.class) {
      live.remove(temporary);
      deleteRecursively(temporary);
    }
  }

  /**
   * The pid that wrote {@code temporary} if it is a temporary of {@code target} (a sibling named by
   * this scheme for exactly that output).
   */
  static OptionalLong writerOf(Path temporary, Path target) {
    String name = temporary.getFileName().toString();
    String prefix = "." + target.getFileName() + ".";
    if (!name.startsWith(prefix) || !name.endsWith(SUFFIX) || name.length() < prefix.length() + SUFFIX.length()) {
      return OptionalLong.empty();
    }
    Matcher matcher = PID_AND_RANDOM.matcher(name.substring(prefix.length(), name.length() - SUFFIX.length()));
    return matcher.matches() ? OptionalLong.of(Long.parseLong(matcher.group(1))) : OptionalLong.empty();
  }

  private static Path create(Path target, boolean folder) throws IOException {
    deleteStale(target);
    while (true) {
      Path temporary =
          target.resolveSibling(
              String.format(Locale.ROOT, ".%s.%d.%016x%s", target.getFileName(), PID, RANDOM.nextLong(), SUFFIX));
      synchronized (TemporaryFiles.class) {
        if (shuttingDown) {
          throw new InterruptedIOException(target + ": not written: the process is exiting");
        }
        try {
          if (folder) {
            Files.createDirectory(temporary);
          } else {
            Files.createFile(temporary);
          }
        } catch (FileAlreadyExistsException e) {
          continue;
        }
        live.add(temporary);
        return temporary;
      }
    }
  }

  /** Deletes the temporaries of {@code target} left by processes that have ended. */
  private static void deleteStale(Path target) throws IOException {
    List<Path> stale = new ArrayList<>();
    try (DirectoryStream<Path> siblings =
        Files.newDirectoryStream(target.getParent(), sibling -> writerOf(sibling, target).isPresent())) {
      siblings.forEach(stale::add);
    }
    for (Path temporary : stale) {
      long pid = writerOf(temporary, target).getAsLong();
      if (pid == PID || ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
        continue;
      }
      try {
        deleteRecursively(temporary);
        log.warn("{}: deleted {}, left by process {}, which has ended", target, temporary.getFileName(), pid);
      } catch (IOException e) {
        log.warn("{}: cannot delete {}, left by process {}, which has ended: {}", target, temporary.getFileName(), pid, e.toString());
      }
    }
  }

  private static void deleteLive() {
    synchronized (TemporaryFiles.class) {
      shuttingDown = true;
      for (Path temporary : live) {
        try {
          deleteRecursively(temporary);
        } catch (IOException e) {
          // The JVM is exiting and has nowhere to report it; the next write to the output finds
          // the file by its name and deletes it.
        }
      }
      live.clear();
    }
  }

  /**
   * Deletes {@code path} and, for a folder, what is in it; a writer still running may add a file
   * while the folder is emptied, so that is tried again a few times.
   */
  private static void deleteRecursively(Path path) throws IOException {
    for (int attempt = 1; ; attempt++) {
      if (Files.isDirectory(path, LinkOption.NOFOLLOW_LINKS)) {
        List<Path> children = new ArrayList<>();
        try (DirectoryStream<Path> stream = Files.newDirectoryStream(path)) {
          stream.forEach(children::add);
        }
        for (Path child : children) {
          deleteRecursively(child);
        }
      }
      try {
        Files.deleteIfExists(path);
        return;
      } catch (DirectoryNotEmptyException e) {
        if (attempt == 3) {
          throw e;
        }
      }
    }
  }
}

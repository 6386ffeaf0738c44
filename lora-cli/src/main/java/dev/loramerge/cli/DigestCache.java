package dev.loramerge.cli;

import static java.nio.charset.StandardCharsets.UTF_8;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.FileTime;
import java.security.DigestInputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

/**
 * The SHA-256 digests of input files that the recipe records, remembered in {@code
 * <cache>/sha256/} under the file's identity: its real path, size, device, inode, modification
 * and status-change times. Any write to a file changes its status-change time, which no program
 * can set back, so a remembered digest is used only for the same bytes.
 *
 * <p>A file changed less than {@link #RACY} before its digest was taken is not remembered: file
 * times have the kernel's tick as resolution, and a write within the same tick as the hashing
 * would leave the identity unchanged. Where the file system has no Unix attributes, or the cache
 * folder cannot be written, every digest is computed. Entries are written to a temporary file
 * and renamed into place, so that a reader sees a whole entry or none.
 */
final class DigestCache {
  /** How long a file must have been left alone for its digest to be remembered. */
  static final Duration RACY = Duration.ofSeconds(2);

  private static final String ATTRIBUTES = "unix:size,dev,ino,lastModifiedTime,ctime";
  private static final Pattern HEX_DIGEST = Pattern.compile("[0-9a-f]{64}");

  private final Optional<Path> folder;
  private final Duration racy;

  DigestCache(Optional<Path> folder, Duration racy) {
    this.folder = folder;
    this.racy = racy;
  }

  /**
   * The cache the command uses: {@code LORA_CACHE_DIR}, else {@code $XDG_CACHE_HOME/loramerge},
   * else {@code ~/.cache/loramerge} (where {@code bin/lora} keeps its JVM caches); none when
   * {@code LORA_CACHE} is {@code off}.
   */
  static DigestCache fromEnvironment(Map<String, String> environment) {
    if ("off".equals(environment.get("LORA_CACHE"))) {
      return new DigestCache(Optional.empty(), RACY);
    }
    Optional<Path> base =
        Optional.ofNullable(environment.get("LORA_CACHE_DIR"))
            .filter(dir -> !dir.isEmpty())
            .map(Path::of)
            .or(() -> Optional.ofNullable(environment.get("XDG_CACHE_HOME")).filter(dir -> !dir.isEmpty())
                .map(dir -> Path.of(dir, "loramerge")))
            .or(() -> Optional.ofNullable(System.getProperty("user.home")).map(home -> Path.of(home, ".cache", "loramerge")));
    return new DigestCache(base.map(dir -> dir.resolve("sha256")), RACY);
  }

  /** Where the digests are remembered; empty when they are not. */
  Optional<Path> folder() {
    return folder;
  }

  /** The SHA-256 of {@code file}'s bytes, in lower-case hex. */
  String sha256(Path file) throws IOException {
    Optional<String> identity = folder.isEmpty() ? Optional.empty() : identity(file);
    if (identity.isEmpty()) {
      return compute(file);
    }
    Path entry = folder.get().resolve(compute(identity.get().getBytes(UTF_8)));
    Optional<String> remembered = read(entry, identity.get());
    if (remembered.isPresent()) {
      return remembered.get();
    }
    Instant started = Instant.now();
    String digest = compute(file);
    if (identity.equals(identity(file)) && settledBefore(file, started)) {
      write(entry, identity.get(), digest);
    }
    return digest;
  }

  /** The real path and Unix attributes that change whenever the file's bytes do; empty without them. */
  private static Optional<String> identity(Path file) {
    try {
      Path real = file.toRealPath();
      Map<String, Object> attributes = Files.readAttributes(real, ATTRIBUTES);
      return Optional.of(
          String.join(
              "\t",
              real.toString(),
              "size=" + attributes.get("size"),
              "dev=" + attributes.get("dev"),
              "ino=" + attributes.get("ino"),
              "mtime=" + nanos(attributes.get("lastModifiedTime")),
              "ctime=" + nanos(attributes.get("ctime"))));
    } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
      return Optional.empty();
    }
  }

  private static String nanos(Object time) {
    return Long.toString(((FileTime) time).to(TimeUnit.NANOSECONDS));
  }

  /** Whether neither time of {@code file} is within {@link #racy} of {@code started}. */
  private boolean settledBefore(Path file, Instant started) {
    try {
      Map<String, Object> attributes = Files.readAttributes(file, "unix:lastModifiedTime,ctime");
      Instant limit = started.minus(racy);
      return !((FileTime) attributes.get("lastModifiedTime")).toInstant().isAfter(limit)
          && !((FileTime) attributes.get("ctime")).toInstant().isAfter(limit);
    } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
      return false;
    }
  }

  private static Optional<String> read(Path entry, String identity) {
    try {
      List<String> lines = Files.readAllLines(entry, UTF_8);
      if (lines.size() == 2 && lines.get(0).equals(identity) && HEX_DIGEST.matcher(lines.get(1)).matches()) {
        return Optional.of(lines.get(1));
      }
    } catch (IOException e) {
      // No entry, or one that cannot be read: the digest is computed.
    }
    return Optional.empty();
  }

  private static void write(Path entry, String identity, String digest) {
    Path temporary = null;
    try {
      Files.createDirectories(entry.getParent());
      temporary = Files.createTempFile(entry.getParent(), ".entry", ".tmp");
      Files.writeString(temporary, identity + "\n" + digest + "\n", UTF_8);
      try {
        Files.move(temporary, entry, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
      } catch (AtomicMoveNotSupportedException e) {
        Files.move(temporary, entry, StandardCopyOption.REPLACE_EXISTING);
      }
      temporary = null;
    } catch (IOException e) {
      // A cache that cannot be written only costs the next command the hashing.
    } finally {
      if (temporary != null) {
        try {
          Files.deleteIfExists(temporary);
        } catch (IOException e) {
          // Left behind in the cache folder; harmless.
        }
      }
    }
  }

  static String compute(Path file) throws IOException {
    MessageDigest digest = sha256();
    try (InputStream in = new DigestInputStream(Files.newInputStream(file), digest)) {
      in.transferTo(OutputStream.nullOutputStream());
    }
    return HexFormat.of().formatHex(digest.digest());
  }

  private static String compute(byte[] bytes) {
    return HexFormat.of().formatHex(sha256().digest(bytes));
  }

  private static MessageDigest sha256() {
    try {
      return MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every Java platform has SHA-256", e);
    }
  }
}

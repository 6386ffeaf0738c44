package dev.loramerge.cli;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.FileTime;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DigestCacheTest {
  /** FIPS 180-2, appendix B.1: SHA-256("abc"). */
  private static final String ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

  /** FIPS 180-2, appendix B.2: SHA-256 of the 56-byte message "abcdbcde…nopq". */
  private static final String TWO_BLOCKS = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";

  private static final String FAKE = "0".repeat(64);

  @TempDir Path dir;

  private Path input(String text) throws IOException {
    Path file = dir.resolve("input.safetensors");
    Files.writeString(file, text, UTF_8);
    // Settled: older than the racy window, as a downloaded adapter is.
    Files.setLastModifiedTime(file, FileTime.from(Instant.now().minusSeconds(3600)));
    return file;
  }

  private DigestCache cache(Duration racy) {
    return new DigestCache(Optional.of(dir.resolve("cache")), racy);
  }

  private List<Path> entries() throws IOException {
    Path folder = dir.resolve("cache");
    if (!Files.isDirectory(folder)) {
      return List.of();
    }
    try (Stream<Path> files = Files.list(folder)) {
      return files.toList();
    }
  }

  /** Replaces the one entry's digest, so that a digest read from the cache shows. */
  private void fakeTheEntry() throws IOException {
    assertThat(entries()).as("cache entries").hasSize(1);
    Path entry = entries().get(0);
    List<String> lines = Files.readAllLines(entry, UTF_8);
    Files.writeString(entry, lines.get(0) + "\n" + FAKE + "\n", UTF_8);
  }

  @Test
  void computesTheDigestOfTheBytes() throws IOException {
    assertThat(cache(Duration.ZERO).sha256(input("abc"))).isEqualTo(ABC);
    assertThat(new DigestCache(Optional.empty(), DigestCache.RACY).sha256(input("abc"))).isEqualTo(ABC);
  }

  @Test
  void remembersTheDigestOfAnUnchangedFile() throws IOException {
    Path file = input("abc");
    DigestCache cache = cache(Duration.ZERO);
    assertThat(cache.sha256(file)).isEqualTo(ABC);
    fakeTheEntry();
    assertThat(cache.sha256(file)).as("read from the entry").isEqualTo(FAKE);
    assertThat(cache.sha256(dir.resolve("cache/../input.safetensors")))
        .as("the same file by another path")
        .isEqualTo(FAKE);
  }

  @Test
  void recomputesWhenTheSizeChanges() throws IOException {
    Path file = input("abc");
    DigestCache cache = cache(Duration.ZERO);
    cache.sha256(file);
    fakeTheEntry();
    FileTime mtime = Files.getLastModifiedTime(file);
    Files.writeString(file, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", UTF_8);
    Files.setLastModifiedTime(file, mtime);
    assertThat(cache.sha256(file)).isEqualTo(TWO_BLOCKS);
  }

  @Test
  void recomputesWhenTheBytesChangeButTheSizeAndModificationTimeDoNot() throws IOException, InterruptedException {
    Path file = input("abd");
    DigestCache cache = cache(Duration.ZERO);
    cache.sha256(file);
    fakeTheEntry();
    FileTime mtime = Files.getLastModifiedTime(file);
    // Past the kernel's timestamp tick (at most 10 ms), so that the status-change time moves.
    Thread.sleep(50);
    Files.writeString(file, "abc", UTF_8);
    Files.setLastModifiedTime(file, mtime);
    assertThat(cache.sha256(file)).isEqualTo(ABC);
  }

  @Test
  void recomputesWhenAnotherFileTakesThePath() throws IOException {
    Path file = input("abd");
    DigestCache cache = cache(Duration.ZERO);
    cache.sha256(file);
    fakeTheEntry();
    Path other = dir.resolve("other");
    Files.writeString(other, "abc", UTF_8);
    Files.setLastModifiedTime(other, Files.getLastModifiedTime(file));
    Files.move(other, file, StandardCopyOption.REPLACE_EXISTING);
    assertThat(cache.sha256(file)).isEqualTo(ABC);
  }

  @Test
  void doesNotRememberAFileChangedWithinTheRacyWindow() throws IOException {
    Path file = dir.resolve("fresh.safetensors");
    Files.writeString(file, "abc", UTF_8);
    DigestCache cache = cache(DigestCache.RACY);
    assertThat(cache.sha256(file)).isEqualTo(ABC);
    assertThat(entries()).as("entries for a file written just now").isEmpty();
  }

  @Test
  void ignoresAnEntryThatIsNotOne() throws IOException {
    Path file = input("abc");
    DigestCache cache = cache(Duration.ZERO);
    cache.sha256(file);
    Path entry = entries().get(0);
    Files.writeString(entry, "garbage\n" + FAKE + "\n", UTF_8);
    assertThat(cache.sha256(file)).as("an entry for another identity").isEqualTo(ABC);
    Files.writeString(entry, Files.readAllLines(entry, UTF_8).get(0) + "\nnot hex\n", UTF_8);
    assertThat(cache.sha256(file)).as("an entry without a digest").isEqualTo(ABC);
  }

  @Test
  void computesWhenTheCacheCannotBeWritten() throws IOException {
    Path file = input("abc");
    Files.writeString(dir.resolve("cache"), "a file where the folder should be", UTF_8);
    assertThat(cache(Duration.ZERO).sha256(file)).isEqualTo(ABC);
    assertThat(cache(Duration.ZERO).sha256(file)).isEqualTo(ABC);
  }

  @Test
  void followsTheLaunchersCacheFolderAndSwitch() {
    assertThat(DigestCache.fromEnvironment(Map.of("LORA_CACHE", "off", "LORA_CACHE_DIR", "/c")).folder())
        .as("LORA_CACHE=off")
        .isEmpty();
    assertThat(DigestCache.fromEnvironment(Map.of("LORA_CACHE_DIR", "/c", "XDG_CACHE_HOME", "/x")).folder())
        .contains(Path.of("/c/sha256"));
    assertThat(DigestCache.fromEnvironment(Map.of("XDG_CACHE_HOME", "/x")).folder())
        .contains(Path.of("/x/loramerge/sha256"));
    assertThat(DigestCache.fromEnvironment(Map.of()).folder())
        .contains(Path.of(System.getProperty("user.home"), ".cache", "loramerge", "sha256"));
  }
}

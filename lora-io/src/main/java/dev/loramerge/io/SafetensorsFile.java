package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;
import static com.google.common.base.Preconditions.checkState;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Locale;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Function;

/**
 * An open safetensors file: its validated header, and its tensors as memory mappings.
 *
 * <p>{@link #open} reads only the header and checks every rule of the reference implementation
 * ({@code huggingface/safetensors}); a file that breaks one is reported as a {@link
 * SafetensorsFormatException} naming the rule. {@link #tensor} maps exactly one tensor's bytes,
 * read-only and little-endian, so files of any size work and nothing is read until it is used.
 *
 * <p>Guarantees: the header accessors return immutable values. Instances are thread-safe; {@link
 * #tensor} may be called from several threads at once. The caller owns the file and closes it;
 * {@link #close} is idempotent. Tensors already returned stay readable after {@code close}: each
 * mapping is released when its buffer is garbage-collected (on Windows the file stays locked until
 * then).
 *
 * <pre>{@code
 * try (SafetensorsFile file = SafetensorsFile.open(Path.of("style.safetensors"))) {
 *   for (TensorSpec spec : file.tensors()) {
 *     TensorData data = file.tensor(spec.name());
 *   }
 * }
 * }</pre>
 */
public final class SafetensorsFile implements AutoCloseable {
  private final Path path;
  private final String fileName;
  private final FileChannel channel;
  private final long size;
  private final SafetensorsHeader header;
  private final ImmutableMap<String, TensorSpec> byName;
  private final AtomicBoolean closed = new AtomicBoolean();

  private SafetensorsFile(Path path, FileChannel channel, long size, SafetensorsHeader header) {
    this.path = path;
    this.fileName = nameOf(path);
    this.channel = channel;
    this.size = size;
    this.header = header;
    this.byName =
        header.tensors().stream()
            .collect(ImmutableMap.toImmutableMap(TensorSpec::name, Function.identity()));
  }

  /**
   * Opens {@code path} and reads and validates its header.
   *
   * @throws SafetensorsFormatException if the file is not a valid safetensors file
   * @throws IOException if the file cannot be read
   */
  public static SafetensorsFile open(Path path) throws IOException {
    checkNotNull(path, "path");
    FileChannel channel = FileChannel.open(path, StandardOpenOption.READ);
    try {
      long size = channel.size();
      SafetensorsHeader header = SafetensorsHeader.read(nameOf(path), channel);
      return new SafetensorsFile(path, channel, size, header);
    } catch (Throwable t) {
      try {
        channel.close();
      } catch (IOException suppressed) {
        t.addSuppressed(suppressed);
      }
      throw t;
    }
  }

  /** The path the file was opened from. */
  public Path path() {
    return path;
  }

  /** The {@code __metadata__} map, in header order; empty when the header has none. */
  public ImmutableMap<String, String> metadata() {
    return header.metadata();
  }

  /** Every tensor's name, dtype and shape, in data-offset order. */
  public ImmutableList<TensorSpec> tensors() {
    return header.tensors();
  }

  /** The name, dtype and shape of the tensor called {@code name}, if there is one. */
  public Optional<TensorSpec> spec(String name) {
    return Optional.ofNullable(byName.get(checkNotNull(name, "name")));
  }

  /** Where each tensor's bytes lie in the data section, by name, in data-offset order. */
  ImmutableMap<String, DataOffsets> offsets() {
    return header.offsets();
  }

  /** Whether the file holds a tensor called {@code name}. */
  public boolean contains(String name) {
    return byName.containsKey(checkNotNull(name, "name"));
  }

  /**
   * The tensor called {@code name}, backed by a read-only, little-endian memory mapping of exactly
   * its bytes. The mapping belongs to the returned value and outlives {@link #close}.
   *
   * @throws IllegalArgumentException if the file holds no tensor called {@code name}
   * @throws IllegalStateException if the file is closed
   * @throws LoraMergeException if the tensor is larger than 2 GiB − 1 byte: a Java 17 buffer cannot
   *     address it
   * @throws UncheckedIOException if mapping fails
   */
  public TensorData tensor(String name) {
    checkNotNull(name, "name");
    checkState(!closed.get(), "%s: file is closed", fileName);
    TensorSpec spec = byName.get(name);
    checkArgument(spec != null, "%s: no tensor '%s'", fileName, name);
    DataOffsets offsets = header.offsets().get(name);
    if (offsets.byteSize() > Integer.MAX_VALUE) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "%s: tensor '%s' holds %d bytes, more than the %d a Java buffer can map",
              fileName,
              name,
              offsets.byteSize(),
              Integer.MAX_VALUE));
    }
    ByteBuffer bytes;
    try {
      bytes =
          channel
              .map(
                  FileChannel.MapMode.READ_ONLY,
                  header.dataOffset() + offsets.begin(),
                  offsets.byteSize())
              .order(ByteOrder.LITTLE_ENDIAN);
    } catch (IOException e) {
      throw new UncheckedIOException(
          String.format(Locale.ROOT, "%s: cannot map tensor '%s'", fileName, name), e);
    }
    return TensorData.of(spec.dtype(), spec.shape(), bytes);
  }

  /**
   * Reads the bytes of tensor {@code name} into {@code target} from its position, without mapping
   * them: memory stays at the caller's buffer, however large the file.
   *
   * @throws IllegalArgumentException if the file holds no tensor called {@code name} or {@code
   *     target} has too little room
   * @throws IOException if reading fails or the file ends early
   */
  public void read(String name, ByteBuffer target) throws IOException {
    DataOffsets offsets = offsetsOrThrow(name);
    checkArgument(
        target.remaining() >= offsets.byteSize(),
        "%s: tensor '%s' needs %s bytes, the buffer has room for %s",
        fileName,
        name,
        offsets.byteSize(),
        target.remaining());
    ByteBuffer window = target.duplicate();
    window.limit(Math.toIntExact(window.position() + offsets.byteSize()));
    read(name, 0, window);
  }

  /**
   * Reads bytes {@code offset} to {@code offset + target.remaining()} of tensor {@code name} into
   * {@code target}, leaving its position unchanged.
   */
  void read(String name, long offset, ByteBuffer target) throws IOException {
    DataOffsets offsets = offsetsOrThrow(name);
    checkArgument(
        offset >= 0 && offset + target.remaining() <= offsets.byteSize(),
        "%s: bytes %s to %s are outside tensor '%s' (%s bytes)",
        fileName,
        offset,
        offset + target.remaining(),
        name,
        offsets.byteSize());
    long position = header.dataOffset() + offsets.begin() + offset;
    ByteBuffer window = target.duplicate();
    while (window.hasRemaining()) {
      int read = channel.read(window, position);
      if (read < 0) {
        throw new SafetensorsFormatException(
            String.format(
                Locale.ROOT, "%s: file ended at byte %d inside tensor '%s'", fileName, position, name));
      }
      position += read;
    }
  }

  /** Copies tensor {@code name}'s bytes to {@code target} at its current position. */
  void transferTo(String name, FileChannel target) throws IOException {
    DataOffsets offsets = offsetsOrThrow(name);
    long position = header.dataOffset() + offsets.begin();
    long remaining = offsets.byteSize();
    while (remaining > 0) {
      long moved = channel.transferTo(position, remaining, target);
      if (moved <= 0) {
        throw new SafetensorsFormatException(
            String.format(
                Locale.ROOT, "%s: file ended at byte %d inside tensor '%s'", fileName, position, name));
      }
      position += moved;
      remaining -= moved;
    }
  }

  private DataOffsets offsetsOrThrow(String name) {
    checkNotNull(name, "name");
    checkState(!closed.get(), "%s: file is closed", fileName);
    DataOffsets offsets = header.offsets().get(name);
    checkArgument(offsets != null, "%s: no tensor '%s'", fileName, name);
    return offsets;
  }

  /** Where the data section starts: 8 bytes of header length plus the header. */
  public long dataOffset() {
    return header.dataOffset();
  }

  /** The file's size in bytes when it was opened. */
  public long size() {
    return size;
  }

  /** Closes the file; calling it again does nothing. Tensors already returned stay readable. */
  @Override
  public void close() throws IOException {
    if (!closed.getAndSet(true)) {
      channel.close();
    }
  }

  /** The file name that starts every message; a root path has none, so it names itself. */
  private static String nameOf(Path path) {
    Path name = path.getFileName();
    return name == null ? path.toString() : name.toString();
  }
}

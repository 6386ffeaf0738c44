package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;
import static com.google.common.base.Preconditions.checkState;

import com.google.common.base.Throwables;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import com.google.common.io.Closer;
import com.sun.nio.file.ExtendedOpenOption;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Writes one safetensors file, tensor by tensor, so that no reader ever sees it half-written.
 *
 * <p>{@link #create} takes the whole layout up front (each tensor's {@link TensorSpec}, in file
 * order, and the metadata), computes the offsets and writes the header to a temporary file in the
 * target's folder. {@link #write} is then called once per tensor, in layout order, with exactly its
 * bytes, so that only one tensor need be in memory at a time. {@link #commit} forces the file to
 * disk and renames it over the target in one atomic step. {@link #close} without a commit deletes
 * the temporary file and leaves the target as it was; so does any failed write.
 *
 * <p>Guarantees: the header is the one the reference writer ({@code huggingface/safetensors})
 * produces for the same order and metadata: compact JSON, {@code __metadata__} first (omitted when
 * empty, entries in the map's iteration order), padded with spaces to a multiple of 8. Reading a
 * file back and writing its {@link SafetensorsFile#tensors} and {@link SafetensorsFile#metadata} in
 * order gives the same bytes. Instances are not thread-safe: one thread writes. The writer owns its
 * temporary file; buffers passed to {@code write} are read, never kept or changed.
 *
 * <p>Where the file system allows it, the file is written with direct I/O ({@link
 * ExtendedOpenOption#DIRECT}), past the page cache, in aligned blocks of {@value #DIRECT_BLOCK}
 * bytes: writing a multi-GB model through the page cache costs three to five times the kernel
 * time of writing it direct. Elsewhere (tmpfs, some network and FUSE file systems) it is written
 * through the page cache as usual; the bytes are the same. {@link DirectBlocks} does the aligned
 * block writes.
 *
 * <p>The class is longer than 400 lines because it is one state machine (header written, tensors
 * in layout order, commit or discard) whose every public step documents and checks its part of
 * the all-or-nothing contract, and whose failure paths must each delete the temporary file and
 * name the target; split further, each piece would need the whole state.
 *
 * <pre>{@code
 * try (SafetensorsWriter writer = SafetensorsWriter.create(target, layout, metadata)) {
 *   for (TensorSpec spec : layout) {
 *     writer.write(spec.name(), compute(spec));
 *   }
 *   writer.commit();
 * }
 * }</pre>
 */
public final class SafetensorsWriter implements AutoCloseable {
  /** Bytes gathered before each direct write. */
  static final int DIRECT_BLOCK = 8 << 20;
  /**
   * The messages with which the platforms report a full disk or an exhausted quota: Java gives no
   * error code, only the C library's text.
   */
  private static final List<String> DISK_FULL =
      List.of("No space left on device", "Disk quota exceeded", "There is not enough space on the disk");

  /** Opens the temporary file's channel; tests put in one that fails as a full disk does. */
  interface Opener {
    FileChannel open(Path path, OpenOption... options) throws IOException;
  }

  private final Path target;
  private final String fileName;
  private final Path temporary;
  private final FileChannel channel;
  /** Non-null when writing direct, past the page cache. */
  private final DirectBlocks direct;
  private final ImmutableList<TensorSpec> layout;
  /** The file's size once written. */
  private final long size;
  private final AtomicBoolean closed = new AtomicBoolean();
  private int written;

  private SafetensorsWriter(
      Path target,
      Path temporary,
      FileChannel channel,
      DirectBlocks direct,
      ImmutableList<TensorSpec> layout,
      long size) {
    this.target = target;
    this.fileName = target.getFileName().toString();
    this.temporary = temporary;
    this.channel = channel;
    this.direct = direct;
    this.layout = layout;
    this.size = size;
  }

  /**
   * Starts writing {@code target}: lays out {@code tensors} in the given order, writes the header
   * with {@code metadata} to a temporary file beside {@code target}, and returns a writer that
   * expects each tensor's bytes in that order. The target is not touched until {@link #commit}.
   *
   * @throws IllegalArgumentException if two tensors share a name, a tensor is called {@code
   *     __metadata__}, the tensors' sizes together overflow, a string has no UTF-8 form (an
   *     unpaired surrogate), or the header would exceed the 100 MB that readers accept
   * @throws IOException if the temporary file cannot be created or written
   */
  public static SafetensorsWriter create(
      Path target, List<TensorSpec> tensors, Map<String, String> metadata) throws IOException {
    return create(target, tensors, metadata, DIRECT_BLOCK, FileChannel::open);
  }

  /**
   * {@link #create(Path, List, Map)} gathering {@code directBlock} bytes per direct write, or
   * through the page cache when {@code directBlock} is 0, opening the file with {@code opener}.
   */
  static SafetensorsWriter create(
      Path target, List<TensorSpec> tensors, Map<String, String> metadata, int directBlock, Opener opener)
      throws IOException {
    checkArgument(
        directBlock % DirectBlocks.ALIGNMENT == 0, "direct blocks are whole multiples of %s bytes", DirectBlocks.ALIGNMENT);
    checkNotNull(target, "target");
    checkNotNull(tensors, "tensors");
    checkNotNull(metadata, "metadata");
    Path absolute = target.toAbsolutePath();
    checkArgument(absolute.getFileName() != null, "target %s names no file", target);
    String fileName = absolute.getFileName().toString();
    ImmutableMap<String, String> metadataCopy = ImmutableMap.copyOf(metadata);
    metadataCopy.forEach(
        (key, value) ->
            checkArgument(
                !SafetensorsHeader.hasUnpairedSurrogate(key)
                    && !SafetensorsHeader.hasUnpairedSurrogate(value),
                "%s: metadata entry '%s' holds an unpaired surrogate, which has no UTF-8 form",
                fileName,
                key));
    ImmutableList<TensorSpec> layout = ImmutableList.copyOf(tensors);
    long dataSize = dataSize(fileName, layout);
    byte[] header = SafetensorsHeader.encode(layout, metadataCopy);
    checkArgument(
        header.length <= SafetensorsHeader.MAX_LENGTH,
        "%s: header would be %s bytes, more than the %s that readers accept",
        fileName,
        header.length,
        SafetensorsHeader.MAX_LENGTH);

    Path temporary = createTemporary(absolute);
    long size = 8 + header.length + dataSize;
    FileChannel channel = directBlock > 0 ? DirectBlocks.open(temporary, opener) : null;
    SafetensorsWriter writer;
    try {
      if (channel != null) {
        DirectBlocks blocks = new DirectBlocks(channel, DirectBlocks.blockFor(size, directBlock));
        writer = new SafetensorsWriter(absolute, temporary, channel, blocks, layout, size);
      } else {
        channel = opener.open(temporary, StandardOpenOption.WRITE);
        writer = new SafetensorsWriter(absolute, temporary, channel, null, layout, size);
      }
    } catch (Throwable t) {
      discard(channel, temporary, t);
      throw t;
    }
    try {
      writer.append(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, header.length));
      writer.append(ByteBuffer.wrap(header));
    } catch (Throwable t) {
      throw writer.abandon(t);
    }
    return writer;
  }

  /**
   * Writes the bytes of the next tensor, which must be called {@code name}: {@code bytes} from its
   * position to its limit, leaving the buffer's position unchanged.
   *
   * @throws IllegalStateException if the writer is closed or every tensor is already written
   * @throws IllegalArgumentException if the next tensor in layout order is not {@code name}, or
   *     {@code bytes} does not hold exactly its byte count
   * @throws IOException if writing fails; the writer is then closed and the temporary file gone
   */
  public void write(String name, ByteBuffer bytes) throws IOException {
    checkNotNull(bytes, "bytes");
    TensorSpec next = next(name);
    checkArgument(
        bytes.remaining() == next.byteSize(),
        "%s: tensor '%s' (%s %s) needs %s bytes, got %s",
        fileName,
        name,
        next.dtype().safetensorsName(),
        Arrays.toString(next.shape()),
        next.byteSize(),
        bytes.remaining());
    try {
      append(bytes.duplicate());
    } catch (Throwable t) {
      throw abandon(t);
    }
    written++;
  }

  /**
   * Writes the next tensor, which must be called {@code name} and have the dtype and shape the
   * layout gave it.
   *
   * @throws IllegalStateException if the writer is closed or every tensor is already written
   * @throws IllegalArgumentException if the next tensor in layout order is not {@code name}, or has
   *     another dtype or shape
   * @throws IOException if writing fails; the writer is then closed and the temporary file gone
   */
  public void write(String name, TensorData tensor) throws IOException {
    checkNotNull(tensor, "tensor");
    TensorSpec next = next(name);
    checkArgument(
        tensor.dtype() == next.dtype() && Arrays.equals(tensor.shape(), next.shape()),
        "%s: tensor '%s' is %s %s but the layout says %s %s",
        fileName,
        name,
        tensor.dtype().safetensorsName(),
        Arrays.toString(tensor.shape()),
        next.dtype().safetensorsName(),
        Arrays.toString(next.shape()));
    write(name, tensor.bytes());
  }

  /**
   * Writes the next tensor, which must be called {@code name}, by copying the bytes of {@code
   * source}'s tensor of the same name, which must have the dtype and shape the layout gave it.
   *
   * @throws IllegalStateException if the writer is closed or every tensor is already written
   * @throws IllegalArgumentException if the next tensor is not {@code name} or does not match
   * @throws IOException if reading or writing fails; the writer is then closed and the temporary
   *     file gone
   */
  public void copy(String name, SafetensorsFile source) throws IOException {
    checkNotNull(source, "source");
    TensorSpec next = next(name);
    TensorSpec from =
        source.spec(name).orElseThrow(() -> new IllegalArgumentException(source.path() + ": no tensor '" + name + "'"));
    checkArgument(
        from.dtype() == next.dtype() && Arrays.equals(from.shape(), next.shape()),
        "%s: tensor '%s' is %s %s but the layout says %s %s",
        fileName,
        name,
        from.dtype().safetensorsName(),
        Arrays.toString(from.shape()),
        next.dtype().safetensorsName(),
        Arrays.toString(next.shape()));
    try {
      if (direct == null) {
        source.transferTo(name, channel);
      } else {
        direct.copy(source, name, from.byteSize());
      }
    } catch (Throwable t) {
      throw abandon(t);
    }
    written++;
  }

  /**
   * Forces the file to disk and renames it over the target atomically, replacing any file there.
   * The writer is closed afterwards.
   *
   * @throws IllegalStateException if the writer is closed or a tensor is not written yet
   * @throws IOException if forcing or renaming fails; the writer is then closed, the temporary file
   *     gone and the target unchanged
   */
  public void commit() throws IOException {
    checkState(!closed.get(), "%s: writer is closed", fileName);
    if (written < layout.size()) {
      throw new IllegalStateException(
          String.format(
              Locale.ROOT,
              "%s: tensor '%s' is not written yet (%d of %d written)",
              fileName,
              layout.get(written).name(),
              written,
              layout.size()));
    }
    try {
      if (direct != null) {
        direct.finish();
      }
      // The bytes and the size must be durable before the rename makes the file visible.
      channel.force(true);
      channel.close();
      TemporaryFiles.publish(
          temporary,
          target,
          () -> Files.move(temporary, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING));
    } catch (Throwable t) {
      throw abandon(t);
    }
    closed.set(true);
  }

  /** Whether this writer writes past the page cache. */
  boolean direct() {
    return direct != null;
  }

  /**
   * Closes the writer. Without a {@link #commit}, deletes the temporary file and leaves the target
   * as it was. Calling it again does nothing.
   */
  @Override
  public void close() throws IOException {
    if (!closed.getAndSet(true)) {
      discard(channel, temporary);
    }
  }

  private TensorSpec next(String name) {
    checkNotNull(name, "name");
    checkState(!closed.get(), "%s: writer is closed", fileName);
    checkState(
        written < layout.size(),
        "%s: cannot write tensor '%s': all %s tensors are written",
        fileName,
        name,
        layout.size());
    TensorSpec next = layout.get(written);
    checkArgument(
        next.name().equals(name),
        "%s: expected tensor '%s' next in layout order, got '%s'",
        fileName,
        next.name(),
        name);
    return next;
  }

  /**
   * Closes after {@code failure}, recording any further failure as suppressed, and returns the
   * exception to throw: {@code failure}, or for a full disk one that names the target and how many
   * bytes did not fit, which neither the platform's message nor the temporary file's name tells.
   */
  private IOException abandon(Throwable failure) {
    Throwable thrown = failure;
    if (failure instanceof IOException && isDiskFull((IOException) failure)) {
      long missing = size - (direct != null ? direct.flushed() : positionOr(0));
      thrown =
          new IOException(
              String.format(
                  Locale.ROOT,
                  "%s: not written: the disk is full, %d of its %d bytes did not fit",
                  target,
                  missing,
                  size),
              failure);
    }
    try {
      close();
    } catch (IOException e) {
      thrown.addSuppressed(e);
    }
    Throwables.throwIfUnchecked(thrown);
    return (IOException) thrown;
  }

  private long positionOr(long fallback) {
    try {
      return channel.position();
    } catch (IOException e) {
      return fallback;
    }
  }

  private static boolean isDiskFull(IOException failure) {
    String message = failure.getMessage();
    return message != null && DISK_FULL.stream().anyMatch(message::contains);
  }

  /**
   * Checks the names of {@code layout} and returns the bytes its tensors hold together.
   *
   * @throws IllegalArgumentException if a name is taken twice, is {@code __metadata__} or has no
   *     UTF-8 form, or the total overflows a {@code long}
   */
  private static long dataSize(String fileName, List<TensorSpec> layout) {
    Set<String> names = new HashSet<>();
    long total = 0;
    for (TensorSpec spec : layout) {
      String name = spec.name();
      checkArgument(
          !name.equals("__metadata__"),
          "%s: a tensor cannot be called '__metadata__', the header's metadata key",
          fileName);
      checkArgument(names.add(name), "%s: tensor '%s' appears twice in the layout", fileName, name);
      checkArgument(
          !SafetensorsHeader.hasUnpairedSurrogate(name),
          "%s: tensor name '%s' holds an unpaired surrogate, which has no UTF-8 form",
          fileName,
          name);
      try {
        total = Math.addExact(total, spec.byteSize());
      } catch (ArithmeticException e) {
        throw new IllegalArgumentException(
            String.format(
                Locale.ROOT, "%s: the tensors up to '%s' hold more than %d bytes", fileName, name, Long.MAX_VALUE),
            e);
      }
    }
    return total;
  }

  /**
   * An empty file beside {@code target} that says which output it is for ({@link TemporaryFiles}).
   * Failures name the target, not the temporary file the user never asked for.
   */
  private static Path createTemporary(Path target) throws IOException {
    Path folder = target.getParent();
    if (!Files.isDirectory(folder)) {
      throw new IOException(target + ": cannot write it: " + folder + (Files.exists(folder) ? " is not a folder" : " does not exist"));
    }
    if (Files.isDirectory(target)) {
      // Found now rather than by the rename after the whole file is written.
      throw new IOException(target + ": cannot write it: it is a folder");
    }
    try {
      return TemporaryFiles.createFile(target);
    } catch (AccessDeniedException e) {
      throw new IOException(target + ": cannot write it: no permission to create files in " + folder, e);
    }
  }

  /** Writes {@code bytes} next, directly or through the page cache. */
  private void append(ByteBuffer bytes) throws IOException {
    if (direct == null) {
      DirectBlocks.writeFully(channel, bytes, -1);
    } else {
      direct.append(bytes);
    }
  }

  /** Closes {@code channel}, if open, and deletes {@code temporary}, attempting both. */
  private static void discard(FileChannel channel, Path temporary) throws IOException {
    Closer closer = Closer.create();
    closer.register(() -> TemporaryFiles.discard(temporary));
    if (channel != null) {
      closer.register(channel);
    }
    closer.close();
  }

  /** {@link #discard} after {@code failure}, recording any further failure as suppressed. */
  private static void discard(FileChannel channel, Path temporary, Throwable failure) {
    try {
      discard(channel, temporary);
    } catch (IOException e) {
      failure.addSuppressed(e);
    }
  }
}

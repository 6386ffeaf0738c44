package dev.loramerge.io;

import com.sun.nio.file.ExtendedOpenOption;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * The direct-I/O half of {@link SafetensorsWriter}: gathers the file's bytes into one aligned
 * buffer and writes it, past the page cache, whenever it fills, so that every write has the
 * buffer address, file position and length that direct I/O requires. The last, partial block is
 * padded to the alignment and the padding cut off the file afterwards.
 *
 * <p>Not thread-safe: the writer that owns it calls it from one thread.
 */
final class DirectBlocks {
  /**
   * The alignment of direct writes (buffer address, file position and length): the largest
   * logical block size of common devices.
   */
  static final int ALIGNMENT = 4096;

  private final FileChannel channel;
  /** The bytes not yet written, from the last aligned position. */
  private final ByteBuffer pending;
  private long flushed;

  /** Writes to {@code channel}, opened for direct writes, gathering {@code block} bytes at a time. */
  DirectBlocks(FileChannel channel, int block) {
    this.channel = channel;
    this.pending = alignedBuffer(block);
  }

  /**
   * The block size for a file of {@code size} bytes: {@code directBlock}, or less for a small
   * file, which needs no more buffer than its own size.
   */
  static int blockFor(long size, int directBlock) {
    return (int) Math.min(directBlock, (size + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT);
  }

  /**
   * {@code temporary} opened for direct writes, or null where the file system refuses them: to
   * open, or (some FUSE file systems) to write an aligned block.
   */
  static FileChannel open(Path temporary, SafetensorsWriter.Opener opener) {
    FileChannel channel = null;
    try {
      channel = opener.open(temporary, StandardOpenOption.WRITE, ExtendedOpenOption.DIRECT);
      writeFully(channel, alignedBuffer(ALIGNMENT), 0);
      return channel;
    } catch (UnsupportedOperationException | IOException e) {
      if (channel != null) {
        try {
          channel.close();
        } catch (IOException suppressed) {
          e.addSuppressed(suppressed);
        }
      }
      return null;
    }
  }

  /** Bytes written to the file so far, whole blocks only. */
  long flushed() {
    return flushed;
  }

  /** Appends {@code bytes}, from its position to its limit, writing each block that fills. */
  void append(ByteBuffer bytes) throws IOException {
    while (bytes.hasRemaining()) {
      int count = Math.min(bytes.remaining(), pending.remaining());
      pending.put(pending.position(), bytes, bytes.position(), count);
      pending.position(pending.position() + count);
      bytes.position(bytes.position() + count);
      flushIfFull();
    }
  }

  /**
   * Appends the {@code byteSize} bytes of tensor {@code name} of {@code source}, read straight
   * into the block buffer.
   */
  void copy(SafetensorsFile source, String name, long byteSize) throws IOException {
    for (long done = 0; done < byteSize; ) {
      ByteBuffer window = pending.slice();
      window.limit((int) Math.min(window.limit(), byteSize - done));
      source.read(name, done, window);
      done += window.limit();
      pending.position(pending.position() + window.limit());
      flushIfFull();
    }
  }

  /** Writes the last, partial block padded to the alignment, and cuts the padding off the file. */
  void finish() throws IOException {
    long size = flushed + pending.position();
    int padded = (pending.position() + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    while (pending.position() < padded) {
      pending.put((byte) 0);
    }
    flush(padded);
    channel.truncate(size);
  }

  private void flushIfFull() throws IOException {
    if (!pending.hasRemaining()) {
      flush(pending.capacity());
    }
  }

  /** Writes the first {@code length} bytes of {@code pending}, a multiple of the alignment, next. */
  private void flush(int length) throws IOException {
    writeFully(channel, pending.duplicate().position(0).limit(length), flushed);
    flushed += length;
    pending.clear();
  }

  /** A direct buffer of {@code size} bytes at an address aligned for direct I/O. */
  private static ByteBuffer alignedBuffer(int size) {
    return ByteBuffer.allocateDirect(size + ALIGNMENT).alignedSlice(ALIGNMENT).limit(size).slice();
  }

  /** Writes all of {@code bytes} at {@code position}, or at the channel's position when negative. */
  static void writeFully(FileChannel channel, ByteBuffer bytes, long position) throws IOException {
    long at = position;
    while (bytes.hasRemaining()) {
      int count = at < 0 ? channel.write(bytes) : channel.write(bytes, at);
      at = at < 0 ? at : at + count;
    }
  }
}

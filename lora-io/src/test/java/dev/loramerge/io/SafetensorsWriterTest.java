package dev.loramerge.io;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.loramerge.DType;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The writer's protocol and its promise that nothing is ever half-written. */
class SafetensorsWriterTest {
  private static final TensorData DOWN = TensorData.ofFloats(new float[] {1, 2}, 1, 2);
  private static final TensorData UP = TensorData.ofFloats(new float[] {3, 4}, 2, 1);
  private static final List<TensorSpec> LAYOUT =
      List.of(TensorSpec.of("down", DOWN), TensorSpec.of("up", UP));

  @TempDir Path folder;

  private Path target() {
    return folder.resolve("style.safetensors");
  }

  private List<Path> folderContents() throws IOException {
    try (Stream<Path> files = Files.list(folder)) {
      return files.toList();
    }
  }

  @Test
  void writesThroughATemporaryFileBesideTheTarget() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      writer.write("down", DOWN);
      assertThat(folderContents())
          .singleElement()
          .satisfies(
              temporary -> {
                assertThat(temporary.getFileName().toString())
                    .as("names the output and the process")
                    .startsWith(".style.safetensors." + ProcessHandle.current().pid() + ".")
                    .endsWith(".lora-tmp");
              });
      writer.write("up", UP);
      writer.commit();
    }
    assertThat(folderContents()).containsExactly(target());
  }

  @Test
  void aMissingFolderAFileInItsPlaceOrAFolderAtTheTargetIsNamedWithTheTarget() throws IOException {
    Path missing = folder.resolve("missing").resolve("style.safetensors");
    assertThatThrownBy(() -> SafetensorsWriter.create(missing, LAYOUT, Map.of()))
        .isInstanceOf(IOException.class)
        .hasMessage("%s: cannot write it: %s does not exist", missing, missing.getParent());
    Path file = Files.writeString(folder.resolve("file"), "not a folder");
    Path inFile = file.resolve("style.safetensors");
    assertThatThrownBy(() -> SafetensorsWriter.create(inFile, LAYOUT, Map.of()))
        .isInstanceOf(IOException.class)
        .hasMessage("%s: cannot write it: %s is not a folder", inFile, file);
    Path aFolder = Files.createDirectory(folder.resolve("out.safetensors"));
    assertThatThrownBy(() -> SafetensorsWriter.create(aFolder, LAYOUT, Map.of()))
        .isInstanceOf(IOException.class)
        .hasMessage("%s: cannot write it: it is a folder", aFolder);
  }

  @Test
  void aFolderWithoutWritePermissionIsNamedWithTheTarget() throws IOException {
    Path locked = Files.createDirectory(folder.resolve("locked"));
    assumeTrue(locked.toFile().setWritable(false, false), "the file system takes away write permission");
    try {
      assumeTrue(!Files.isWritable(locked), "not running as a user who may write anyway (root)");
      Path target = locked.resolve("style.safetensors");
      assertThatThrownBy(() -> SafetensorsWriter.create(target, LAYOUT, Map.of()))
          .isInstanceOf(IOException.class)
          .hasMessage("%s: cannot write it: no permission to create files in %s", target, locked);
    } finally {
      locked.toFile().setWritable(true, false);
    }
  }

  @Test
  void closeWithoutCommitLeavesNothing() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      writer.write("down", DOWN);
    }
    assertThat(folderContents()).isEmpty();
  }

  @Test
  void interruptedWriteKeepsTheOldFile() throws IOException {
    Safetensors.write(target(), Map.of("old", DOWN), Map.of());
    byte[] old = Files.readAllBytes(target());
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      writer.write("down", DOWN);
    }
    assertThat(folderContents()).containsExactly(target());
    assertThat(Files.readAllBytes(target())).isEqualTo(old);
  }

  @Test
  void commitReplacesTheOldFile() throws IOException {
    Safetensors.write(target(), Map.of("old", DOWN), Map.of());
    Safetensors.write(target(), Map.of("down", DOWN, "up", UP), Map.of());
    try (SafetensorsFile file = SafetensorsFile.open(target())) {
      assertThat(file.tensors()).extracting(TensorSpec::name).containsExactly("down", "up");
    }
  }

  @Test
  void wrongByteCount() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      assertThatThrownBy(() -> writer.write("down", ByteBuffer.allocate(12)))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("style.safetensors: tensor 'down' (F32 [1, 2]) needs 8 bytes, got 12");
    }
    assertThat(folderContents()).isEmpty();
  }

  @Test
  void wrongDtypeOrShape() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      assertThatThrownBy(() -> writer.write("down", UP))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage(
              "style.safetensors: tensor 'down' is F32 [2, 1] but the layout says F32 [1, 2]");
      assertThatThrownBy(() -> writer.write("down", DOWN.to(DType.F16)))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage(
              "style.safetensors: tensor 'down' is F16 [1, 2] but the layout says F32 [1, 2]");
    }
  }

  @Test
  void outOfOrder() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      assertThatThrownBy(() -> writer.write("up", UP))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("style.safetensors: expected tensor 'down' next in layout order, got 'up'");
    }
  }

  @Test
  void commitBeforeEveryTensorIsWritten() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      writer.write("down", DOWN);
      assertThatThrownBy(writer::commit)
          .isInstanceOf(IllegalStateException.class)
          .hasMessage("style.safetensors: tensor 'up' is not written yet (1 of 2 written)");
    }
    assertThat(folderContents()).isEmpty();
  }

  @Test
  void writeAfterTheLastTensor() throws IOException {
    try (SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of())) {
      writer.write("down", DOWN);
      writer.write("up", UP);
      assertThatThrownBy(() -> writer.write("extra", UP))
          .isInstanceOf(IllegalStateException.class)
          .hasMessage("style.safetensors: cannot write tensor 'extra': all 2 tensors are written");
    }
  }

  @Test
  void closedWriter() throws IOException {
    SafetensorsWriter writer = SafetensorsWriter.create(target(), LAYOUT, Map.of());
    writer.close();
    writer.close();
    assertThatThrownBy(() -> writer.write("down", DOWN))
        .isInstanceOf(IllegalStateException.class)
        .hasMessage("style.safetensors: writer is closed");
    assertThatThrownBy(writer::commit)
        .isInstanceOf(IllegalStateException.class)
        .hasMessage("style.safetensors: writer is closed");
  }

  @Test
  void invalidLayouts() {
    assertThatThrownBy(
            () ->
                SafetensorsWriter.create(
                    target(),
                    List.of(
                        TensorSpec.of("down", DOWN),
                        TensorSpec.of("down", UP)),
                    Map.of()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("style.safetensors: tensor 'down' appears twice in the layout");
    assertThatThrownBy(
            () ->
                SafetensorsWriter.create(
                    target(), List.of(TensorSpec.of("__metadata__", DOWN)), Map.of()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage(
            "style.safetensors: a tensor cannot be called '__metadata__', the header's metadata"
                + " key");
    assertThatThrownBy(
            () ->
                SafetensorsWriter.create(
                    target(),
                    List.of(
                        new TensorSpec("half", DType.F32, new long[] {1L << 60}),
                        new TensorSpec("more", DType.F32, new long[] {1L << 60})),
                    Map.of()))
        .as("each tensor's size fits in a long, but not both together")
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage(
            "style.safetensors: the tensors up to 'more' hold more than 9223372036854775807"
                + " bytes");
    assertThatThrownBy(
            () -> SafetensorsWriter.create(target(), List.of(), Map.of("key", "lone \uD800")))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage(
            "style.safetensors: metadata entry 'key' holds an unpaired surrogate, which has no"
                + " UTF-8 form");
    assertThat(folder).isEmptyDirectory();
  }

  @Test
  void directWritesGiveTheBytesOfPageCacheWrites() throws IOException {
    // Sizes that straddle the 4096-byte alignment and the 8192-byte blocks in every way, some
    // tensors handed over as bytes and some copied from a file, and a file size that is not a
    // multiple of the alignment.
    SplittableRandom random = new SplittableRandom(7);
    int[] sizes = {1, 4095, 4096, 4097, 8191, 8192, 20000, 3, 12289, 0, 70001};
    List<TensorSpec> layout = new ArrayList<>();
    Map<String, TensorData> tensors = new LinkedHashMap<>();
    for (int i = 0; i < sizes.length; i++) {
      byte[] bytes = new byte[sizes[i]];
      random.nextBytes(bytes);
      TensorData tensor = TensorData.of(DType.U8, new long[] {sizes[i]}, ByteBuffer.wrap(bytes));
      tensors.put("t" + i, tensor);
      layout.add(TensorSpec.of("t" + i, tensor));
    }
    Map<String, String> metadata = Map.of("note", "x".repeat(333));
    Path cached = folder.resolve("cached.safetensors");
    try (SafetensorsWriter writer = SafetensorsWriter.create(cached, layout, metadata, 0, FileChannel::open)) {
      assertThat(writer.direct()).as("a block size of 0 writes through the page cache").isFalse();
      for (Map.Entry<String, TensorData> tensor : tensors.entrySet()) {
        writer.write(tensor.getKey(), tensor.getValue());
      }
      writer.commit();
    }
    Path direct = folder.resolve("direct.safetensors");
    try (SafetensorsFile source = SafetensorsFile.open(cached);
        SafetensorsWriter writer = SafetensorsWriter.create(direct, layout, metadata, 8192, FileChannel::open)) {
      assumeTrue(writer.direct(), "the file system of " + folder + " refuses direct I/O");
      int i = 0;
      for (Map.Entry<String, TensorData> tensor : tensors.entrySet()) {
        if (i++ % 3 == 1) {
          writer.copy(tensor.getKey(), source);
        } else {
          writer.write(tensor.getKey(), tensor.getValue());
        }
      }
      writer.commit();
    }
    assertThat(Files.size(cached) % 4096).as("the test's file size is not a multiple of the alignment").isNotZero();
    assertThat(Files.readAllBytes(direct)).isEqualTo(Files.readAllBytes(cached));
  }

  @Test
  void permissionsAreThoseOfAPlainNewFile() throws IOException {
    assumeTrue(folder.getFileSystem().supportedFileAttributeViews().contains("posix"));
    Path plain = Files.createFile(folder.resolve("plain"));
    Safetensors.write(target(), Map.of(), Map.of());
    assertThat(Files.getPosixFilePermissions(target()))
        .isEqualTo(Files.getPosixFilePermissions(plain));
  }

  @Test
  void aFullDiskNamesTheTargetAndTheBytesThatDidNotFit() throws IOException {
    TensorData big = TensorData.ofFloats(new float[1000], 10, 100);
    List<TensorSpec> layout =
        List.of(TensorSpec.of("a", big), TensorSpec.of("b", big));
    long room = 6000;
    try (SafetensorsWriter writer =
        SafetensorsWriter.create(target(), layout, Map.of(), 0, (path, options) -> new FullDisk(FileChannel.open(path, options), room))) {
      writer.write("a", big);
      long size = 8 + SafetensorsHeader.encode(
          List.of(new TensorSpec("a", DType.F32, new long[] {10, 100}), new TensorSpec("b", DType.F32, new long[] {10, 100})),
          Map.of()).length + 8000;
      assertThatThrownBy(() -> writer.write("b", big))
          .as("the platform's ENOSPC becomes a message about the output")
          .isInstanceOf(IOException.class)
          .hasMessage("%s: not written: the disk is full, %d of its %d bytes did not fit", target(), size - room, size)
          .hasRootCauseMessage("No space left on device");
    }
    assertThat(folderContents()).as("no temporary file is left").isEmpty();
  }

  /** A channel on a disk with {@code room} bytes: writes past them fail as Linux's do. */
  private static final class FullDisk extends FileChannel {
    private final FileChannel file;
    private final long room;

    FullDisk(FileChannel file, long room) {
      this.file = file;
      this.room = room;
    }

    private ByteBuffer fitting(ByteBuffer source, long at) throws IOException {
      if (at >= room && source.hasRemaining()) {
        throw new IOException("No space left on device");
      }
      return source.slice().limit((int) Math.min(source.remaining(), room - at));
    }

    @Override
    public int write(ByteBuffer source) throws IOException {
      ByteBuffer part = fitting(source, file.position());
      int written = file.write(part);
      source.position(source.position() + written);
      return written;
    }

    @Override
    public int write(ByteBuffer source, long position) throws IOException {
      ByteBuffer part = fitting(source, position);
      int written = file.write(part, position);
      source.position(source.position() + written);
      return written;
    }

    @Override
    public long write(ByteBuffer[] sources, int offset, int length) throws IOException {
      throw new UnsupportedOperationException("the writer writes one buffer at a time");
    }

    @Override
    public int read(ByteBuffer target) throws IOException {
      return file.read(target);
    }

    @Override
    public long read(ByteBuffer[] targets, int offset, int length) throws IOException {
      return file.read(targets, offset, length);
    }

    @Override
    public int read(ByteBuffer target, long position) throws IOException {
      return file.read(target, position);
    }

    @Override
    public long position() throws IOException {
      return file.position();
    }

    @Override
    public FileChannel position(long position) throws IOException {
      file.position(position);
      return this;
    }

    @Override
    public long size() throws IOException {
      return file.size();
    }

    @Override
    public FileChannel truncate(long size) throws IOException {
      file.truncate(size);
      return this;
    }

    @Override
    public void force(boolean metaData) throws IOException {
      file.force(metaData);
    }

    @Override
    public long transferTo(long position, long count, java.nio.channels.WritableByteChannel target) throws IOException {
      return file.transferTo(position, count, target);
    }

    @Override
    public long transferFrom(java.nio.channels.ReadableByteChannel source, long position, long count) {
      throw new UnsupportedOperationException("the test copies no tensor");
    }

    @Override
    public java.nio.MappedByteBuffer map(MapMode mode, long position, long size) {
      throw new UnsupportedOperationException("the writer maps nothing");
    }

    @Override
    public java.nio.channels.FileLock lock(long position, long size, boolean shared) {
      throw new UnsupportedOperationException("the writer locks nothing");
    }

    @Override
    public java.nio.channels.FileLock tryLock(long position, long size, boolean shared) {
      throw new UnsupportedOperationException("the writer locks nothing");
    }

    @Override
    protected void implCloseChannel() throws IOException {
      file.close();
    }
  }
}

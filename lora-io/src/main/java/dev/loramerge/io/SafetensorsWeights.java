package dev.loramerge.io;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.fuse.WeightUpdate;
import dev.loramerge.internal.fuse.Fusion;
import dev.loramerge.internal.fuse.ScaledFloat8;
import dev.loramerge.internal.json.Json;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Collectors;

/**
 * A safetensors base model as a {@link WeightTarget}: a fuse writes a new file, tensor by tensor,
 * in the base's order and with its metadata (plus the recipe), copying every tensor it does not
 * change byte for byte. Memory stays bounded whatever the file's size: the tensors fused ahead of
 * the writer hold at most the larger of 128 MiB (a quarter of the maximum heap, if less) and
 * three of the largest tensors. The output appears only once complete (a temporary file renamed
 * into place), and the base is never modified.
 *
 * <pre>{@code
 * LoraMerger.builder().add(style, 0.8).build()
 *     .fuseInto(SafetensorsWeights.of(Path.of("unet.safetensors"), Path.of("unet-style.safetensors")));
 * }</pre>
 *
 * <p>{@link #restoring} is the way back: given the fused file, the original base and the same
 * update, it checks that the fused file is the original with that update fused and writes the
 * original's bytes for the tensors the update changed.
 */
public final class SafetensorsWeights implements WeightTarget {
  /**
   * Bytes of tensors the worker may read and fuse ahead of the writer, at most: several of SDXL's
   * largest (26 MB) or a long run of small ones, so that the worker keeps fusing while the writer
   * copies the tensors an update leaves alone; a worker kept two tensors ahead would idle there
   * (an SDXL file fuse takes about a tenth longer). A quarter of the heap's maximum bounds it
   * too, since direct memory is limited to that maximum unless set otherwise.
   */
  private static final long STAGING_BYTES = 128L << 20;

  private final Path base;
  private final Path output;
  private final Optional<DType> dtype;
  private final Optional<Path> original;
  private final ImmutableMap<String, TensorSpec> weights;

  private SafetensorsWeights(
      Path base, Path output, Optional<DType> dtype, Optional<Path> original, ImmutableMap<String, TensorSpec> weights) {
    this.base = base;
    this.output = output;
    this.dtype = dtype;
    this.original = original;
    this.weights = weights;
  }

  /**
   * Fuses into {@code base}, writing {@code output}.
   *
   * @throws IllegalArgumentException if {@code output} is {@code base}
   * @throws SafetensorsFormatException if {@code base} is not a valid safetensors file
   * @throws IOException if {@code base} cannot be read
   */
  public static SafetensorsWeights of(Path base, Path output) throws IOException {
    checkDistinct(base, output);
    return new SafetensorsWeights(base, output, Optional.empty(), Optional.empty(), readWeights(base));
  }

  /**
   * Undoes a fuse exactly: {@code fused} was written by fusing an update into {@code original};
   * applying the same update to this target writes {@code output} with {@code original}'s bytes
   * for every tensor the update changes (after checking that fusing them again gives {@code
   * fused}'s bytes), {@code fused}'s bytes for the others, and {@code original}'s metadata. When
   * nothing else changed the fused file, {@code output} is byte for byte {@code original}. A
   * weight the fuse widened (a Flux.1 control LoRA's {@code img_in}) is checked at its widened
   * shape and written back at the original's.
   *
   * @throws IllegalArgumentException if {@code output} is one of the inputs
   * @throws SafetensorsFormatException if either file is not a valid safetensors file
   * @throws IOException if a file cannot be read
   */
  public static SafetensorsWeights restoring(Path fused, Path original, Path output) throws IOException {
    checkDistinct(fused, output);
    checkDistinct(original, output);
    return new SafetensorsWeights(fused, output, Optional.empty(), Optional.of(original), restoredWeights(fused, original));
  }

  /**
   * This target writing every floating-point tensor as {@code dtype} (fused weights rounded once
   * from float64, the others converted with one rounding), and recording {@code dtype} in the
   * recipe. A value that {@code dtype} cannot hold (one that rounds beyond its largest finite
   * value, or an infinity for float8 e4m3fn, which has none) fails the fuse naming its tensor,
   * and no output appears; a NaN of the base stays a NaN.
   */
  public SafetensorsWeights withDType(DType dtype) {
    checkNotNull(dtype, "dtype");
    checkArgument(original.isEmpty(), "a restore writes the original's dtypes");
    checkArgument(dtype.isFloatingPoint(), "can write floating-point tensors only as a floating-point type, got %s", dtype);
    return new SafetensorsWeights(base, output, Optional.of(dtype), original, weights);
  }

  @Override
  public ImmutableMap<String, TensorSpec> weights() {
    return weights;
  }

  @Override
  public Optional<Restorer> apply(WeightUpdate update) throws IOException {
    checkNotNull(update, "update");
    try (SafetensorsFile from = SafetensorsFile.open(base);
        SafetensorsFile originalFile = original.isPresent() ? SafetensorsFile.open(original.get()) : null) {
      if (originalFile != null) {
        checkSameLayout(from, originalFile, update);
      }
      SafetensorsFile source = originalFile != null ? originalFile : from;
      Float8Scales quantization = Float8Scales.of(source);
      if (dtype.isPresent() && quantization.anyScaled()) {
        throw new LoraMergeException(
            "holds scaled float8 weights, whose scales would not follow a conversion to "
                + dtype.get().safetensorsName() + "; fuse it keeping its types");
      }
      // A restore writes the original's shapes; a fuse the shapes the update gives (a widened img_in).
      List<TensorSpec> layout = new ArrayList<>();
      long total = 0;
      for (TensorSpec spec : from.tensors()) {
        TensorSpec written = originalFile != null
            ? originalFile.spec(spec.name()).orElseThrow()
            : new TensorSpec(spec.name(), outputType(spec.dtype()),
                update.names().contains(spec.name()) ? update.outputShape(spec) : spec.shape());
        layout.add(written);
        total += spec.byteSize();
      }
      Map<String, String> metadata =
          originalFile != null ? originalFile.metadata() : withRecipe(from.metadata(), recipe(update.recipe()));
      // The touched weights as the update reads them: the original's, for a restore.
      List<TensorSpec> touched =
          from.tensors().stream().filter(spec -> update.names().contains(spec.name()))
              .map(spec -> source.spec(spec.name()).orElseThrow()).collect(Collectors.toList());
      // Every touched weight's layout is checked before anything is written.
      Map<String, double[]> scales = new HashMap<>();
      for (TensorSpec spec : touched) {
        quantization.scales(spec).ifPresent(values -> scales.put(spec.name(), values));
      }
      long[] touchedSizes = touched.stream().mapToLong(TensorSpec::byteSize).toArray();
      StagingRing staging =
          new StagingRing(
              StagingRing.capacityFor(touchedSizes, Math.min(STAGING_BYTES, Runtime.getRuntime().maxMemory() / 4)));
      long largest = touched.stream().mapToLong(spec -> TensorData.numel(update.outputShape(spec)) * spec.dtype().byteSize())
          .max().orElse(1);
      ByteBuffer check =
          originalFile != null
              ? ByteBuffer.allocateDirect(Math.toIntExact(largest)).order(ByteOrder.LITTLE_ENDIAN)
              : null;
      // One worker reads and computes the changed tensors, in order and as far ahead as the
      // staging ring holds, while this thread writes: the arithmetic overlaps the file I/O, and
      // memory stays at the ring's bytes.
      ExecutorService worker =
          Executors.newSingleThreadExecutor(
              runnable -> {
                Thread thread = new Thread(runnable, "lora-fuse");
                thread.setDaemon(true);
                return thread;
              });
      Deque<Future<Computed>> pending = new ArrayDeque<>();
      int submitted = 0;
      long done = 0;
      try (SafetensorsWriter writer = SafetensorsWriter.create(output, layout, metadata)) {
        try {
          for (TensorSpec spec : from.tensors()) {
            while (submitted < touched.size()) {
              TensorSpec next = touched.get(submitted);
              Optional<ByteBuffer> buffer = staging.take(Math.toIntExact(next.byteSize()));
              if (buffer.isEmpty()) {
                break;
              }
              submitted++;
              pending.add(worker.submit(
                  () -> compute(update, source, next, buffer.get(), scales.get(next.name()), originalFile != null)));
            }
            String name = spec.name();
            if (update.names().contains(name)) {
              Computed computed = await(pending.remove());
              if (originalFile != null) {
                checkFused(from, spec, computed.fused(), check);
              }
              writer.write(name, computed.output());
              staging.free();
            } else if (outputType(spec.dtype()) != spec.dtype()) {
              writer.write(name, converted(from.tensor(name), outputType(spec.dtype()), name));
            } else {
              writer.copy(name, from);
            }
            done += spec.byteSize();
            update.progress(done, total);
          }
          writer.commit();
        } finally {
          // The worker uses the staging buffers and the source file: it must be idle before they go.
          stop(worker);
        }
      }
    } catch (LoraMergeException e) {
      throw new LoraMergeException(base.getFileName() + ": " + e.getMessage(), e);
    }
    return Optional.empty();
  }

  /** What the worker hands the writer: the bytes to write, and the fused bytes to check. */
  private record Computed(ByteBuffer output, ByteBuffer fused) {}

  /**
   * Reads {@code spec} from {@code source} into {@code staging} and applies the update there; for
   * a restore the output is a copy of the original's bytes. A scaled float8 weight ({@code scales}
   * not null; null for any other weight) is fused as the float64 weight stored·scale, and stored
   * again divided by its scale.
   */
  private Computed compute(
      WeightUpdate update, SafetensorsFile source, TensorSpec spec, ByteBuffer staging, double[] scales,
      boolean restore) throws IOException {
    ByteBuffer bytes = read(source, spec, staging);
    ByteBuffer original = null;
    if (restore) {
      original = ByteBuffer.allocate(bytes.remaining()).order(ByteOrder.LITTLE_ENDIAN);
      original.put(bytes.duplicate()).flip();
    }
    long outputElements = TensorData.numel(update.outputShape(spec));
    if (scales != null) {
      double[] values = ScaledFloat8.decode(bytes, spec.dtype(), scales);
      ByteBuffer weight = ByteBuffer.allocate(values.length * Double.BYTES).order(ByteOrder.LITTLE_ENDIAN);
      weight.asDoubleBuffer().put(values);
      ByteBuffer fused64 = outputElements == values.length
          ? weight
          : ByteBuffer.allocate(Math.toIntExact(outputElements * Double.BYTES)).order(ByteOrder.LITTLE_ENDIAN);
      update.apply(new TensorSpec(spec.name(), DType.F64, spec.shape()), weight, fused64, DType.F64);
      double[] fusedValues = new double[Math.toIntExact(outputElements)];
      fused64.asDoubleBuffer().get(fusedValues);
      // A widened weight keeps its rows, so a per-row scale still scales each of them.
      ByteBuffer codes = outputElements == values.length ? bytes : outputBuffer(outputElements, spec.dtype());
      ScaledFloat8.encode(fusedValues, spec.dtype(), scales, codes, update.describe(spec.name()));
      return new Computed(restore ? original : codes, codes);
    }
    DType outputType = outputType(spec.dtype());
    ByteBuffer fused =
        outputType.byteSize() == spec.dtype().byteSize() && outputElements == TensorData.numel(spec.shape())
            ? bytes
            : outputBuffer(outputElements, outputType);
    update.apply(spec, bytes, fused, outputType);
    return new Computed(restore ? original : fused, fused);
  }

  /** A buffer, outside the staging ring, for a fused tensor that is wider or larger than its input. */
  private static ByteBuffer outputBuffer(long elements, DType dtype) {
    return ByteBuffer.allocateDirect(Math.toIntExact(elements * dtype.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
  }

  private static void stop(ExecutorService worker) {
    worker.shutdownNow();
    boolean interrupted = false;
    while (true) {
      try {
        if (worker.awaitTermination(1, java.util.concurrent.TimeUnit.MINUTES)) {
          break;
        }
      } catch (InterruptedException e) {
        interrupted = true;
      }
    }
    if (interrupted) {
      Thread.currentThread().interrupt();
    }
  }

  private static Computed await(Future<Computed> future) throws IOException {
    try {
      return future.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new java.io.InterruptedIOException("interrupted while fusing");
    } catch (ExecutionException e) {
      Throwable cause = e.getCause();
      if (cause instanceof IOException) {
        throw (IOException) cause;
      }
      if (cause instanceof RuntimeException) {
        throw (RuntimeException) cause;
      }
      if (cause instanceof Error) {
        throw (Error) cause;
      }
      throw new IOException(cause);
    }
  }

  private DType outputType(DType input) {
    return dtype.isPresent() && input.isFloatingPoint() ? dtype.get() : input;
  }

  /**
   * {@code tensor}, which the update leaves alone, rounded once to {@code type}; a value that
   * becomes infinite or NaN there (a NaN stays one) is refused, as a fused value would be.
   */
  private static TensorData converted(TensorData tensor, DType type, String name) {
    TensorData result = tensor.to(type);
    long first = Fusion.firstNonFinite(result.bytes(), type);
    if (first < 0) {
      return result;
    }
    for (long i = first; i < result.numel(); i++) {
      double value = tensor.getDouble(i);
      double written = result.getDouble(i);
      if (!Double.isNaN(value) && !Double.isFinite(written) && written != value) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "tensor '%s': value %s at element %d is beyond the range of %s; write it as a wider type",
                name,
                value,
                i,
                type.safetensorsName()));
      }
    }
    return result;
  }

  /** {@code recipe} with the output's dtype, when this target converts to one. */
  private String recipe(String recipe) {
    if (dtype.isEmpty()) {
      return recipe;
    }
    try {
      Map<String, Object> fields = Json.parseObject(recipe);
      Map<String, Object> result = new LinkedHashMap<>();
      fields.forEach((key, value) -> {
        result.put(key, value);
        if (key.equals("operation")) {
          result.put("dtype", dtype.get().safetensorsName());
        }
      });
      result.putIfAbsent("dtype", dtype.get().safetensorsName());
      return Json.write(result, false);
    } catch (IOException e) {
      throw new IllegalArgumentException("the update's recipe is not a JSON object: " + recipe, e);
    }
  }

  /** {@code spec}'s bytes read into the start of {@code staging}, as a buffer of exactly them. */
  private static ByteBuffer read(SafetensorsFile file, TensorSpec spec, ByteBuffer staging) throws IOException {
    ByteBuffer window = staging.clear().limit(Math.toIntExact(spec.byteSize())).slice().order(ByteOrder.LITTLE_ENDIAN);
    file.read(spec.name(), window);
    return window;
  }

  private void checkFused(SafetensorsFile fused, TensorSpec spec, ByteBuffer recomputed, ByteBuffer check)
      throws IOException {
    ByteBuffer actual = read(fused, spec, check);
    if (!actual.equals(recomputed.duplicate().order(ByteOrder.LITTLE_ENDIAN))) {
      int size = spec.dtype().byteSize();
      long differing = 0;
      for (int i = 0; i < actual.remaining(); i += size) {
        if (actual.get(i) != recomputed.get(i) || (size > 1 && actual.get(i + 1) != recomputed.get(i + 1))) {
          differing++;
        }
      }
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "tensor '%s' is not %s with these inputs fused (%d of %d elements differ); is it the"
                  + " original base, and are the inputs and weights the fuse's?",
              spec.name(),
              original.orElseThrow().getFileName(),
              differing,
              spec.byteSize() / size));
    }
  }

  /**
   * Checks that {@code fused} has {@code originalFile}'s tensors, each of the same dtype and of
   * the same shape, or of the shape {@code update} gives it (a widened weight).
   */
  private void checkSameLayout(SafetensorsFile fused, SafetensorsFile originalFile, WeightUpdate update) {
    for (TensorSpec spec : fused.tensors()) {
      Optional<TensorSpec> other = originalFile.spec(spec.name());
      if (other.isEmpty()
          || other.get().dtype() != spec.dtype()
          || !Arrays.equals(
              update.names().contains(spec.name()) ? update.outputShape(other.get()) : other.get().shape(), spec.shape())) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT,
                "tensor '%s' is %s %s but %s has %s; the original must be the base the fuse started from",
                spec.name(),
                spec.dtype().safetensorsName(),
                Arrays.toString(spec.shape()),
                originalFile.path().getFileName(),
                other.map(o -> o.dtype().safetensorsName() + " " + Arrays.toString(o.shape())).orElse("no such tensor")));
      }
    }
  }

  /**
   * The base's metadata with the recipe under {@link LoraMerger#RECIPE_KEY}; a recipe the base
   * already had (it was fused before) moves to {@code loramerge_recipe.N}, N counting up from 1.
   */
  private static Map<String, String> withRecipe(Map<String, String> metadata, String recipe) {
    Map<String, String> result = new LinkedHashMap<>(metadata);
    String previous = result.remove(LoraMerger.RECIPE_KEY);
    if (previous != null) {
      int index = 1;
      while (result.containsKey(LoraMerger.RECIPE_KEY + "." + index)) {
        index++;
      }
      result.put(LoraMerger.RECIPE_KEY + "." + index, previous);
    }
    result.put(LoraMerger.RECIPE_KEY, recipe);
    return result;
  }

  /**
   * The weights of a restore: {@code fused}'s names in its order, each with its spec in {@code
   * original} where it has one, so that the update is planned as the fuse was (a weight the fuse
   * widened is widened again from the original's, and checked against the fused file's).
   */
  private static ImmutableMap<String, TensorSpec> restoredWeights(Path fused, Path original) throws IOException {
    ImmutableMap<String, TensorSpec> originals = readWeights(original);
    ImmutableMap.Builder<String, TensorSpec> weights = ImmutableMap.builder();
    readWeights(fused).forEach((name, spec) -> weights.put(name, originals.getOrDefault(name, spec)));
    return weights.build();
  }

  private static ImmutableMap<String, TensorSpec> readWeights(Path path) throws IOException {
    checkNotNull(path, "path");
    try (SafetensorsFile file = SafetensorsFile.open(path)) {
      ImmutableMap.Builder<String, TensorSpec> weights = ImmutableMap.builder();
      for (TensorSpec spec : file.tensors()) {
        weights.put(spec.name(), spec);
      }
      return weights.build();
    }
  }

  private static void checkDistinct(Path input, Path output) throws IOException {
    checkNotNull(input, "input");
    checkNotNull(output, "output");
    boolean same =
        Files.exists(output) ? Files.isSameFile(input, output) : input.toAbsolutePath().normalize().equals(output.toAbsolutePath().normalize());
    checkArgument(!same, "output %s is the input file; inputs are never modified", output);
  }

  @Override
  public String toString() {
    return "SafetensorsWeights{base="
        + base
        + ", output="
        + output
        + ", dtype="
        + dtype.map(DType::safetensorsName).orElse("keep")
        + original.map(path -> ", original=" + path).orElse("")
        + "}";
  }
}

package dev.loramerge.arch;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.DType;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.ScaleRule;
import dev.loramerge.TensorData;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

/**
 * One Linear weight of an original checkpoint that holds several modules of the diffusers model
 * stacked by rows, such as Flux's {@code double_blocks.N.img_attn.qkv} ({@code attn.to_q}, {@code
 * to_k}, {@code to_v}) and {@code single_blocks.N.linear1} ({@code attn.to_q}, {@code to_k},
 * {@code to_v}, {@code proj_mlp}). A segment may also be a row range of a module: Flux's {@code
 * final_layer.adaLN_modulation.1} is diffusers' {@code norm_out.linear} with its two halves
 * swapped.
 *
 * <p>A LoRA on the fused weight and LoRAs on its parts convert both ways exactly:
 *
 * <ul>
 *   <li>{@link #split}: every part keeps the fused module's down factor A and alpha, and takes its
 *       rows of the up factor B. Nothing is rounded; the parts' updates are the fused update's
 *       rows bit for bit, and each part has the fused module's rank.
 *   <li>{@link #join}: when every part has the same A, alpha and scale rule (as after a split),
 *       the result shares that A and stacks the parts' B by rows: the rank stays, and a split
 *       joins back to the original bytes. Otherwise the downs are stacked and B is block
 *       diagonal (each part's B in its rows and its own columns, zeros elsewhere): the rank is
 *       the sum of the parts' ranks, and the update is still exactly each part's. A part that is
 *       missing has zero rows.
 * </ul>
 *
 * <p>Instances are immutable and thread-safe.
 *
 * @param originalPath the weight's module path in the original checkpoint
 * @param inFeatures the input features every part shares
 * @param blockId the block-weight id of the parts
 * @param segments the fused weight's rows, in order: each names a module and a row range of it
 */
public record FusedModule(
    String originalPath, long inFeatures, Optional<String> blockId, ImmutableList<FusedModule.Segment> segments) {

  /**
   * Rows {@code [moduleRow, moduleRow + rows)} of the module {@code key}, placed next in the
   * fused weight.
   *
   * @param key the diffusers module
   * @param moduleRow the first row of the module the segment holds
   * @param rows how many rows
   */
  public record Segment(ModuleKey key, long moduleRow, long rows) {
    /** Validates the range. */
    public Segment {
      checkNotNull(key, "key");
      checkArgument(moduleRow >= 0 && rows > 0, "segment of '%s': rows %s from %s", key, rows, moduleRow);
    }
  }

  /**
   * A LoRA on the fused weight, made by {@link #join}: its update is {@code scale·up·down} with
   * the scale of {@code alpha} and {@code scaleRule} at rank {@code down.dim(0)}.
   *
   * @param down A, r×in
   * @param up B, out×r
   * @param alpha the alpha
   * @param scaleRule how alpha and rank give the scale
   */
  public record Joined(TensorData down, TensorData up, double alpha, ScaleRule scaleRule) {
    /** The rank. */
    public int rank() {
      return Math.toIntExact(down.dim(0));
    }
  }

  /** Validates the module. */
  public FusedModule {
    checkNotNull(originalPath, "originalPath");
    checkNotNull(blockId, "blockId");
    checkArgument(inFeatures > 0, "fused module '%s': in features %s", originalPath, inFeatures);
    checkArgument(!segments.isEmpty(), "fused module '%s' has no segments", originalPath);
  }

  /** The rows of the fused weight: the sum of the segments' rows. */
  public long outFeatures() {
    return segments.stream().mapToLong(Segment::rows).sum();
  }

  /** {@code [out, in]}. A new array on each call. */
  public long[] weightShape() {
    return new long[] {outFeatures(), inFeatures};
  }

  /** The modules the segments name, each once, in the order of their first segment. */
  public ImmutableList<ModuleKey> keys() {
    return segments.stream().map(Segment::key).distinct().collect(ImmutableList.toImmutableList());
  }

  /** The rows of module {@code key}: the end of its last row range. */
  public long moduleRows(ModuleKey key) {
    return segments.stream()
        .filter(segment -> segment.key().equals(key))
        .mapToLong(segment -> segment.moduleRow() + segment.rows())
        .max()
        .orElseThrow(() -> new IllegalArgumentException("'" + key + "' is not a part of " + originalPath));
  }

  /** The first row of each segment in the fused weight, in segment order. */
  public long[] fusedRows() {
    long[] starts = new long[segments.size()];
    long row = 0;
    for (int i = 0; i < starts.length; i++) {
      starts[i] = row;
      row += segments.get(i).rows();
    }
    return starts;
  }

  /**
   * The parts of a LoRA on the fused weight: one module per key, with the fused module's down
   * (the same tensor), alpha and scale rule, and its rows of {@code up} (a view of them where
   * they lie in one range in order, else a copy). Exact.
   *
   * @throws LoraMergeException when the factors do not fit the fused weight
   */
  public ImmutableList<LoraModule> split(TensorData down, TensorData up, double alpha, ScaleRule scaleRule) {
    checkNotNull(down, "down");
    checkNotNull(up, "up");
    if (down.rank() != 2 || up.rank() != 2 || down.dim(1) != inFeatures || up.dim(0) != outFeatures()
        || up.dim(1) != down.dim(0)) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "fused module '%s': down %s and up %s do not make a LoRA of its %s weight",
              originalPath,
              Arrays.toString(down.shape()),
              Arrays.toString(up.shape()),
              Arrays.toString(weightShape())));
    }
    long rank = up.dim(1);
    long rowBytes = rank * up.dtype().byteSize();
    long[] starts = fusedRows();
    ImmutableList.Builder<LoraModule> parts = ImmutableList.builder();
    for (ModuleKey key : keys()) {
      long rows = moduleRows(key);
      ByteBuffer partBytes;
      int only = singleSegment(key);
      if (only >= 0 && segments.get(only).moduleRow() == 0) {
        partBytes = up.bytes().position(Math.toIntExact(starts[only] * rowBytes))
            .limit(Math.toIntExact((starts[only] + rows) * rowBytes)).slice();
      } else {
        partBytes = ByteBuffer.allocate(Math.toIntExact(rows * rowBytes)).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < segments.size(); i++) {
          Segment segment = segments.get(i);
          if (segment.key().equals(key)) {
            ByteBuffer source = up.bytes().position(Math.toIntExact(starts[i] * rowBytes))
                .limit(Math.toIntExact((starts[i] + segment.rows()) * rowBytes));
            partBytes.position(Math.toIntExact(segment.moduleRow() * rowBytes)).put(source);
          }
        }
        partBytes.clear();
      }
      parts.add(LoraModule.of(key, down, TensorData.of(up.dtype(), new long[] {rows, rank}, partBytes), alpha, scaleRule));
    }
    return parts.build();
  }

  /**
   * The rows of a per-row tensor of the fused weight ({@code values}: one value per row, such as
   * a bias or a bias difference) that belong to each part, by the same segments as {@link #split}:
   * exact, each part's values in its own row order.
   *
   * @throws LoraMergeException when {@code values} does not hold one value per row
   */
  public ImmutableMap<ModuleKey, TensorData> splitRows(TensorData values) {
    checkNotNull(values, "values");
    if (values.numel() != outFeatures()) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT, "fused module '%s': %s holds %d values, expected one per row (%d)", originalPath,
              Arrays.toString(values.shape()), values.numel(), outFeatures()));
    }
    long elementBytes = values.dtype().byteSize();
    long[] starts = fusedRows();
    ImmutableMap.Builder<ModuleKey, TensorData> parts = ImmutableMap.builder();
    for (ModuleKey key : keys()) {
      long rows = moduleRows(key);
      ByteBuffer partBytes = ByteBuffer.allocate(Math.toIntExact(rows * elementBytes)).order(ByteOrder.LITTLE_ENDIAN);
      for (int i = 0; i < segments.size(); i++) {
        Segment segment = segments.get(i);
        if (segment.key().equals(key)) {
          ByteBuffer source = values.bytes().position(Math.toIntExact(starts[i] * elementBytes))
              .limit(Math.toIntExact((starts[i] + segment.rows()) * elementBytes));
          partBytes.position(Math.toIntExact(segment.moduleRow() * elementBytes)).put(source);
        }
      }
      parts.put(key, TensorData.of(values.dtype(), new long[] {rows}, partBytes.clear()));
    }
    return parts.build();
  }

  /**
   * The per-row tensor of the fused weight whose rows are {@code parts}' values (one per row of
   * each part, as {@link #splitRows} gives them), zeros for a missing part: exact. Values of
   * different dtypes are joined in float64.
   *
   * @throws LoraMergeException when a part is no module of this weight or has the wrong count
   */
  public TensorData joinRows(Map<ModuleKey, TensorData> parts) {
    checkNotNull(parts, "parts");
    checkArgument(!parts.isEmpty(), "fused module '%s': nothing to join", originalPath);
    DType dtype = parts.values().iterator().next().dtype();
    for (Map.Entry<ModuleKey, TensorData> part : parts.entrySet()) {
      if (!keys().contains(part.getKey()) || part.getValue().numel() != moduleRows(part.getKey())) {
        throw new LoraMergeException(
            String.format(
                Locale.ROOT, "module '%s' with %s values is not a part of fused weight '%s'", part.getKey(),
                Arrays.toString(part.getValue().shape()), originalPath));
      }
      if (part.getValue().dtype() != dtype) {
        dtype = DType.F64;
      }
    }
    long elementBytes = dtype.byteSize();
    ByteBuffer joined = ByteBuffer.allocate(Math.toIntExact(outFeatures() * elementBytes)).order(ByteOrder.LITTLE_ENDIAN);
    long[] starts = fusedRows();
    for (int i = 0; i < segments.size(); i++) {
      Segment segment = segments.get(i);
      TensorData part = parts.get(segment.key());
      if (part == null) {
        continue;
      }
      long from = segment.moduleRow() * elementBytes;
      ByteBuffer source = part.to(dtype).bytes().position(Math.toIntExact(from))
          .limit(Math.toIntExact(from + segment.rows() * elementBytes));
      joined.position(Math.toIntExact(starts[i] * elementBytes)).put(source);
    }
    return TensorData.of(dtype, new long[] {outFeatures()}, joined.clear());
  }

  private int singleSegment(ModuleKey key) {
    int found = -1;
    for (int i = 0; i < segments.size(); i++) {
      if (segments.get(i).key().equals(key)) {
        if (found >= 0) {
          return -1;
        }
        found = i;
      }
    }
    return found;
  }

  /**
   * One LoRA on the fused weight whose rows are the updates of {@code parts} (modules of this
   * fused weight, at least one; a missing part contributes zero rows). See the class comment for
   * when the rank stays and when it adds up.
   *
   * <p>Joined with their own down factors, parts whose scales differ get the ratio of their scale
   * to the first part's folded into their rows of B, rounded once to B's dtype: the only case that
   * is not exact. Factors of different dtypes are joined in the widest of them.
   *
   * @throws LoraMergeException when a part is no module of this weight or does not fit it
   */
  public Joined join(Iterable<LoraModule> parts) {
    Map<ModuleKey, LoraModule> byKey = new LinkedHashMap<>();
    for (LoraModule part : parts) {
      checkFits(part);
      byKey.put(part.key(), part);
    }
    checkArgument(!byKey.isEmpty(), "fused module '%s': nothing to join", originalPath);
    ImmutableList<LoraModule> present =
        keys().stream().filter(byKey::containsKey).map(byKey::get).collect(ImmutableList.toImmutableList());
    LoraModule first = present.get(0);
    boolean shared =
        present.stream()
            .allMatch(
                part -> part.down().equals(first.down())
                    && Double.compare(part.alpha(), first.alpha()) == 0
                    && part.scaleRule() == first.scaleRule()
                    && part.up().dtype() == first.up().dtype());
    if (shared) {
      return new Joined(first.down(), stackRows(ImmutableMap.copyOf(byKey), first.up().dtype(), first.rank(), null),
          first.alpha(), first.scaleRule());
    }
    DType downType = widest(present, true);
    DType upType = widest(present, false);
    Map<ModuleKey, Integer> columns = new LinkedHashMap<>();
    int rank = 0;
    for (LoraModule part : present) {
      columns.put(part.key(), rank);
      rank += part.rank();
    }
    ByteBuffer down = ByteBuffer.allocate(Math.toIntExact(rank * inFeatures * downType.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
    for (LoraModule part : present) {
      down.put(part.down().to(downType).bytes());
    }
    down.clear();
    double scale = first.scale();
    TensorData up = stackRows(ImmutableMap.copyOf(byKey), upType, rank, columns);
    return new Joined(
        TensorData.of(downType, new long[] {rank, inFeatures}, down),
        scaled(up, present, columns, scale),
        ScaleRule.STANDARD.alphaFor(scale, rank),
        ScaleRule.STANDARD);
  }

  /** {@code up} with each part's columns times its scale over {@code scale}, where that is not 1. */
  private static TensorData scaled(TensorData up, ImmutableList<LoraModule> present, Map<ModuleKey, Integer> columns, double scale) {
    if (present.stream().allMatch(part -> part.scale() == scale)) {
      return up;
    }
    double[] values = up.toDoubleArray();
    int rank = Math.toIntExact(up.dim(1));
    for (LoraModule part : present) {
      double ratio = part.scale() / scale;
      int column = columns.get(part.key());
      for (int row = 0; row < values.length / rank; row++) {
        for (int c = column; c < column + part.rank(); c++) {
          values[row * rank + c] *= ratio;
        }
      }
    }
    return TensorData.ofDoubles(values, up.dtype(), up.shape());
  }

  /**
   * B of the fused weight: each part's rows placed at its segments' rows, in its own columns
   * ({@code columns}) or, with {@code columns} null, in all of them.
   */
  private TensorData stackRows(ImmutableMap<ModuleKey, LoraModule> byKey, DType dtype, int rank, Map<ModuleKey, Integer> columns) {
    long elementBytes = dtype.byteSize();
    ByteBuffer up = ByteBuffer.allocate(Math.toIntExact(outFeatures() * rank * elementBytes)).order(ByteOrder.LITTLE_ENDIAN);
    long[] starts = fusedRows();
    for (int i = 0; i < segments.size(); i++) {
      Segment segment = segments.get(i);
      LoraModule part = byKey.get(segment.key());
      if (part == null) {
        continue;
      }
      ByteBuffer source = part.up().to(dtype).bytes();
      long partRowBytes = part.rank() * elementBytes;
      long column = columns == null ? 0 : columns.get(part.key());
      for (long row = 0; row < segment.rows(); row++) {
        long from = (segment.moduleRow() + row) * partRowBytes;
        source.limit(Math.toIntExact(from + partRowBytes)).position(Math.toIntExact(from));
        up.position(Math.toIntExact(((starts[i] + row) * rank + column) * elementBytes)).put(source);
      }
    }
    up.clear();
    return TensorData.of(dtype, new long[] {outFeatures(), rank}, up);
  }

  private static DType widest(ImmutableList<LoraModule> parts, boolean down) {
    DType widest = null;
    for (LoraModule part : parts) {
      DType dtype = down ? part.down().dtype() : part.up().dtype();
      if (widest == null || dtype.byteSize() > widest.byteSize()) {
        widest = dtype;
      } else if (dtype != widest && dtype.byteSize() == widest.byteSize()) {
        // fp16 and bf16 hold different values; float32 holds both.
        widest = DType.F32;
      }
    }
    return widest;
  }

  private void checkFits(LoraModule part) {
    if (!keys().contains(part.key())) {
      throw new LoraMergeException(
          String.format(Locale.ROOT, "module '%s' is not a part of fused weight '%s'", part.key(), originalPath));
    }
    if (part.kind() != LoraModule.Kind.LINEAR
        || part.inFeatures() != inFeatures
        || part.outFeatures() != moduleRows(part.key())) {
      throw new LoraMergeException(
          String.format(
              Locale.ROOT,
              "module '%s' updates a %s weight, but as a part of '%s' it is [%d, %d]",
              part.key(),
              Arrays.toString(part.weightShape()),
              originalPath,
              moduleRows(part.key()),
              inFeatures));
    }
  }
}

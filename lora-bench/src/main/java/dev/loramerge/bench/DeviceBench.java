package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.MergeMethod;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.internal.fuse.OrderedKernels;
import dev.loramerge.internal.fuse.TaskKernels;
import dev.loramerge.internal.json.Json;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import dev.loramerge.merge.ModuleUpdates;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalDouble;
import java.util.OptionalLong;

/**
 * {@code bin/lora-bench device --device gpu|cpu}: the in-memory workload of {@code e2e} with the
 * weights as NDArrays on a device, through the public API only ({@link WeightTarget#of(Map)},
 * {@link LoraFuser}, {@link LoraMerger} with its device set). On the SDXL attention weights (722
 * fp16 weights, one rank-32 fp16 LoRA, as {@link SdxlData} makes it):
 *
 * <ul>
 *   <li>{@code fuse/memory} and {@code unfuse/memory}: median, min and max of the runs after a
 *       warm-up, each waiting for the device's queue; on a GPU the device memory in use before
 *       the weights, with them, after the first fuse and after its unfuse (cudaMemGetInfo, so
 *       libtorch's cached blocks count: the figure after the fuse bounds its peak from above);
 *   <li>{@code fuse/memory/separate-product}, {@code fuse/memory/libtorch-rounding}, {@code
 *       fuse/memory/libtorch-float64-factors}: the same fuse, interleaved with it, with libtorch's
 *       float64 product rounded by the CUDA kernel rather than the product formed in the kernel,
 *       with the CUDA kernels off, and with them off and the float64 factors copied to the device
 *       instead of the adapter's stored ones;
 *   <li>{@code fuse/memory/factors-kept}: the same fuse into a target that keeps the adapter's
 *       stored factors on the device ({@link WeightTarget.Builder#keepFactorsOnDevice}, kept by
 *       its warm-up), as PEFT keeps its LoRA modules there: only the coefficients travel;
 *   <li>{@code fuse/factors}: the host's share of that fuse, every module's float64 factors
 *       computed on the common pool's threads, without the device;
 *   <li>{@code hotswap} and {@code hotswap/factors-kept}: fuse then unfuse, {@code --cycles} times
 *       (time per cycle), then how many weights differ from their originals in any bit, into the
 *       plain target and into the one that keeps the factors; {@code --hotswap-s} bounds the time
 *       of each, so that a slow fuse leaves time for the rest (the cycles done are reported);
 *   <li>{@code bytes/F32}, {@code bytes/F16}, {@code bytes/BF16}: the same fuse into weights of
 *       that type on the device and on the CPU ({@code Device.cpu()} arrays, the same seeded
 *       values), the count of elements whose bytes differ, and after both unfuses the count of
 *       weights not back to their originals; on the device into a target that keeps the factors,
 *       twice: the first fuse copies them into what it keeps ({@code differing_elements}), the
 *       second reads them from there ({@code differing_elements_factors_kept}); bf16 only where
 *       {@link Devices#probeBf16} finds that the JNI library can hold it;
 *   <li>{@code merge/<method>}: every merge method (two adapters, weights 0.7 and 0.5, density
 *       0.5, rank 32) with the merger's device set, timed as above, and the number of modules
 *       whose factors differ in any byte from the same merge on the CPU; on {@code --threads}
 *       threads where given (the merger's default, one per processor, otherwise), to see how a
 *       method that is bound by the host scales there;
 *   <li>{@code merge/<method>/tasks-on-host}: for the methods the task kernels run on the GPU, the
 *       same merge with the method run on the host and the device re-ranking its updates (the path
 *       without the kernels), timed, and the number of modules whose bytes differ from the
 *       kernels' merge (which must be 0).
 * </ul>
 *
 * <p>{@code --device cpu} runs the same with CPU arrays on both sides (the report's structure,
 * on any machine). {@code --device gpu} stops with a message where DJL sees no GPU. {@code
 * --deadline-s} skips what would start after that many seconds (marked in the report), so a run
 * under a time limit still reports what it did; the JSON is rewritten after every operation.
 */
final class DeviceBench {
  private static final double STYLE_WEIGHT = 0.7;
  private static final double SUBJECT_WEIGHT = 0.5;
  private static final double DENSITY = 0.5;
  /** What a target keeps of the adapters' factors on the device: the SDXL adapter's are about 170 MB. */
  private static final long KEPT_FACTOR_BYTES = 1L << 30;
  private static final long BASE_SEED = 7;

  static final String USAGE =
      "usage: bin/lora-bench device [--device gpu|cpu] [--runs N] [--cycles N] [--rank R] [--modules N] [--methods a,b]"
          + " [--threads N] [--skip-fuse] [--skip-merge] [--skip-bytes] [--hotswap-s S] [--deadline-s S] [--json FILE]";

  private final Device device;
  private final int runs;
  private final int cycles;
  private final long hotswapNanos;
  private final int rank;
  private final int threads;
  private final long deadline;
  private final Path json;
  private final Map<String, Object> report = new LinkedHashMap<>();
  private final List<Map<String, Object>> operations = new ArrayList<>();
  private final List<String> skipped = new ArrayList<>();
  private final List<String> errors = new ArrayList<>();

  private DeviceBench(
      Device device, int runs, int cycles, long hotswapSeconds, int rank, int threads, long deadlineSeconds, Path json) {
    this.device = device;
    this.runs = runs;
    this.cycles = cycles;
    this.hotswapNanos = hotswapSeconds > 0 ? hotswapSeconds * 1_000_000_000L : Long.MAX_VALUE;
    this.rank = rank;
    this.threads = threads;
    this.deadline = deadlineSeconds > 0 ? System.nanoTime() + deadlineSeconds * 1_000_000_000L : Long.MAX_VALUE;
    this.json = json;
  }

  /** Runs {@code device ...}; returns the exit status (1 when an operation failed). */
  static int run(List<String> args) throws IOException {
    String deviceName = "gpu";
    int runs = 3;
    int cycles = 1000;
    int rank = 32;
    int modules = Integer.MAX_VALUE;
    // The merger's own default, passed on so that the report says what the merges ran on.
    int threads = Runtime.getRuntime().availableProcessors();
    long deadlineSeconds = 0;
    long hotswapSeconds = 0;
    List<String> methods = MergeMethod.names();
    boolean fuse = true;
    boolean merge = true;
    boolean bytes = true;
    Path json = null;
    for (int i = 0; i < args.size(); i++) {
      String option = args.get(i);
      switch (option) {
        case "--device" -> deviceName = value(args, ++i, option);
        case "--runs" -> runs = positive(option, value(args, ++i, option));
        case "--cycles" -> cycles = positive(option, value(args, ++i, option));
        case "--rank" -> rank = positive(option, value(args, ++i, option));
        case "--modules" -> modules = positive(option, value(args, ++i, option));
        case "--threads" -> threads = positive(option, value(args, ++i, option));
        case "--deadline-s" -> deadlineSeconds = positive(option, value(args, ++i, option));
        case "--hotswap-s" -> hotswapSeconds = positive(option, value(args, ++i, option));
        case "--methods" -> methods = Arrays.asList(value(args, ++i, option).split(","));
        case "--json" -> json = Path.of(value(args, ++i, option));
        case "--skip-fuse" -> fuse = false;
        case "--skip-merge" -> merge = false;
        case "--skip-bytes" -> bytes = false;
        default -> throw new IllegalArgumentException("unknown option " + option + "\n" + USAGE);
      }
    }
    for (String method : methods) {
      MergeMethod.parse(method);
    }
    Device device = Devices.parse(deviceName, "run with --device cpu for the same report on the CPU");
    DeviceBench bench = new DeviceBench(device, runs, cycles, hotswapSeconds, rank, threads, deadlineSeconds, json);
    return bench.run(modules, fuse, bytes, merge ? methods : List.of());
  }

  private int run(int moduleLimit, boolean fuse, boolean bytes, List<String> methods) throws IOException {
    Engine engine = Engine.getInstance();
    long start = System.nanoTime();
    LoraAdapter style = SdxlData.adapter("style", rank, 32, 1, moduleLimit);
    long parameters = style.modules().values().stream().mapToLong(module -> product(module.weightShape())).sum();
    report.put("device", device.toString());
    report.put("engine", engine.getEngineName() + " " + engine.getVersion());
    report.put("gpu_count", engine.getGpuCount());
    report.put("java", Runtime.version().toString());
    report.put("modules", style.size());
    report.put("parameters", parameters);
    report.put("rank", rank);
    report.put("runs", runs);
    report.put("merge_threads", threads);
    report.put("operations", operations);
    report.put("skipped", skipped);
    report.put("errors", errors);
    System.out.printf(
        Locale.ROOT, "device %s (%s %s, %d GPUs): %d modules, %.3f G weight parameters, rank %d, made in %.1f s%n",
        device, engine.getEngineName(), engine.getVersion(), engine.getGpuCount(), style.size(), parameters / 1e9, rank,
        (System.nanoTime() - start) / 1e9);
    Devices.Bf16 bf16 = Devices.probeBf16(device);
    report.put("bf16", bf16.json());
    System.out.println("bf16: " + bf16.message());
    if (fuse) {
      guarded("fuse/memory", () -> timeFuse(style));
    }
    if (bytes) {
      for (DType type : List.of(DType.F32, DType.F16, DType.BF16)) {
        if (type == DType.BF16 && !bf16.supported()) {
          skip("bytes/BF16", bf16.message());
        } else {
          guarded("bytes/" + type, () -> compareBytes(style, type));
        }
      }
    }
    if (!methods.isEmpty()) {
      LoraAdapter subject = SdxlData.adapter("subject", rank, 16, 2, moduleLimit);
      for (String method : methods) {
        guarded("merge/" + method, () -> timeMerge(style, subject, method));
      }
    }
    write();
    System.out.println(errors.isEmpty() ? "done" : "FAILED: " + String.join("; ", errors));
    return errors.isEmpty() ? 0 : 1;
  }

  /** An action of the bench that may fail without stopping the others. */
  @FunctionalInterface
  private interface Section {
    void run() throws IOException;
  }

  /** Runs {@code section} unless the deadline has passed; records a failure and goes on. */
  private void guarded(String name, Section section) throws IOException {
    if (System.nanoTime() > deadline) {
      skip(name, "deadline passed");
      return;
    }
    try {
      section.run();
    } catch (RuntimeException | IOException e) {
      String message = name + ": " + e.getClass().getSimpleName() + ": " + e.getMessage();
      errors.add(message);
      System.err.println(message);
      e.printStackTrace();
    }
    write();
  }

  private void skip(String name, String why) {
    skipped.add(name + ": " + why);
    System.out.println(name + " skipped: " + why);
  }

  /** The fuse, unfuse and hot-swap of the fp16 workload. */
  private void timeFuse(LoraAdapter style) throws IOException {
    Map<String, Object> memory = new LinkedHashMap<>();
    memory.put("before", memoryJson());
    try (NDManager host = NDManager.newBaseManager(Device.cpu());
        NDManager onDevice = NDManager.newBaseManager(device)) {
      Map<String, NDArray> originals = baseWeights(host, style, DataType.FLOAT16);
      Map<String, NDArray> weights = copies(originals, onDevice);
      NDArray last = weights.values().stream().reduce((a, b) -> b).orElseThrow();
      Devices.await(last);
      memory.put("weights", memoryJson());
      WeightTarget target = WeightTarget.of(weights);
      LoraFuser fuser = LoraFuser.of(LoraMerger.builder().add(style, 1.0).device(device).build());
      FusedLora warm = fuser.fuseInto(target);
      Devices.await(last);
      memory.put("after_first_fuse", memoryJson());
      if (warm.report().matched().size() != style.size()) {
        throw new IllegalStateException(
            String.format(Locale.ROOT, "the fuse matched %d of %d modules: %s", warm.report().matched().size(), style.size(), warm.report()));
      }
      warm.unfuse();
      Devices.await(last);
      memory.put("after_unfuse", memoryJson());
      report.put("device_memory_bytes", memory);
      WeightTarget keeping = WeightTarget.builder().weights(weights).keepFactorsOnDevice(KEPT_FACTOR_BYTES).build();
      fuser.fuseInto(keeping).unfuse();
      double[] kept = new double[runs];
      double[] fuses = new double[runs];
      double[] unfuses = new double[runs];
      double[][] variants = new double[VARIANTS.length][runs];
      for (int run = 0; run < runs; run++) {
        long start = System.nanoTime();
        FusedLora fused = fuser.fuseInto(target);
        Devices.await(last);
        fuses[run] = seconds(start);
        start = System.nanoTime();
        fused.unfuse();
        Devices.await(last);
        unfuses[run] = seconds(start);
        for (int v = 0; v < VARIANTS.length; v++) {
          variants[v][run] = variantFuse(VARIANTS[v], fuser, target, last);
        }
        kept[run] = variantFuse(new String[] {"factors-kept"}, fuser, keeping, last);
      }
      record(timing("fuse/memory", fuses));
      record(timing("unfuse/memory", unfuses));
      for (int v = 0; v < VARIANTS.length; v++) {
        record(timing("fuse/memory/" + VARIANTS[v][0], variants[v]));
      }
      record(timing("fuse/memory/factors-kept", kept));
      record(timing("fuse/factors", factorSeconds(style)));
      hotswap("hotswap", fuser, target, weights, originals, last);
      hotswap("hotswap/factors-kept", fuser, keeping, weights, originals, last);
      target.trim();
      keeping.trim();
    }
  }

  /** Fuse then unfuse into {@code target}, {@code cycles} times or until its time is up, then the weights compared with their originals. */
  private void hotswap(
      String name, LoraFuser fuser, WeightTarget target, Map<String, NDArray> weights, Map<String, NDArray> originals, NDArray last)
      throws IOException {
    int done = 0;
    long start = System.nanoTime();
    long stop = hotswapNanos == Long.MAX_VALUE ? deadline : Math.min(deadline, start + hotswapNanos);
    while (done < cycles && System.nanoTime() < stop) {
      FusedLora fused = fuser.fuseInto(target);
      fused.unfuse();
      Devices.await(last);
      done++;
    }
    double total = seconds(start);
    long differing = Devices.compare(weights, originals).differingWeights();
    Map<String, Object> swap = new LinkedHashMap<>();
    swap.put("name", name);
    swap.put("cycles", cycles);
    swap.put("cycles_done", done);
    swap.put("per_cycle_s", done == 0 ? 0 : total / done);
    swap.put("total_s", total);
    swap.put("weights", weights.size());
    swap.put("differing_weights", differing);
    record(swap);
    if (done < cycles) {
      skip(name, String.format(Locale.ROOT, "time limit reached after %d of %d cycles", done, cycles));
    }
    if (differing != 0) {
      errors.add(String.format(Locale.ROOT, "%s: %d of %d weights differ from their originals after %d cycles", name, differing, weights.size(), done));
    }
  }

  /**
   * The fuse with the library's faster device steps turned off, interleaved with {@code
   * fuse/memory} run by run: its name, then the system properties set for it.
   */
  private static final String[][] VARIANTS = {
    {"separate-product", "loramerge.cuda.separateProduct"},
    {"libtorch-rounding", "loramerge.cuda.disabled"},
    {"libtorch-float64-factors", "loramerge.cuda.disabled", "loramerge.device.float64Factors"},
  };

  private static double variantFuse(String[] variant, LoraFuser fuser, WeightTarget target, NDArray last) throws IOException {
    List<String> properties = List.of(variant).subList(1, variant.length);
    properties.forEach(property -> System.setProperty(property, "true"));
    try {
      long start = System.nanoTime();
      FusedLora fused = fuser.fuseInto(target);
      Devices.await(last);
      double seconds = seconds(start);
      fused.unfuse();
      Devices.await(last);
      return seconds;
    } finally {
      properties.forEach(System::clearProperty);
    }
  }

  /**
   * The host's share of a fuse: every module's float64 factors, which a fuse computes before the
   * device sees them, on as many threads as the fuser uses. Times of {@code runs} rounds.
   */
  private double[] factorSeconds(LoraAdapter style) {
    ModuleUpdates updates = LoraMerger.builder().add(style, 1.0).device(device).build().updates();
    List<ModuleKey> keys = List.copyOf(style.modules().keySet());
    double[] seconds = new double[runs];
    for (int run = 0; run < runs; run++) {
      long start = System.nanoTime();
      long values = keys.parallelStream().mapToLong(key -> updates.factors(key).up().length).sum();
      seconds[run] = seconds(start);
      if (values == 0) {
        throw new IllegalStateException("no factors");
      }
    }
    return seconds;
  }

  /** The same fuse into {@code type} weights on the device and on the CPU, compared byte for byte. */
  private void compareBytes(LoraAdapter style, DType type) throws IOException {
    DataType dataType = dataType(type);
    try (NDManager host = NDManager.newBaseManager(Device.cpu());
        NDManager onDevice = NDManager.newBaseManager(device)) {
      Map<String, NDArray> cpu = baseWeights(host, style, dataType);
      Map<String, NDArray> originals = copies(cpu, host);
      Map<String, NDArray> weights = copies(cpu, onDevice);
      NDArray last = weights.values().stream().reduce((a, b) -> b).orElseThrow();
      LoraFuser onCpu = LoraFuser.of(LoraMerger.builder().add(style, 1.0).device(Device.cpu()).build());
      LoraFuser there = LoraFuser.of(LoraMerger.builder().add(style, 1.0).device(device).build());
      long start = System.nanoTime();
      FusedLora cpuFuse = onCpu.fuseInto(WeightTarget.of(cpu));
      double cpuSeconds = seconds(start);
      WeightTarget deviceTarget = WeightTarget.builder().weights(weights).keepFactorsOnDevice(KEPT_FACTOR_BYTES).build();
      start = System.nanoTime();
      FusedLora deviceFuse = there.fuseInto(deviceTarget);
      Devices.await(last);
      double deviceSeconds = seconds(start);
      Devices.Comparison copied = Devices.compare(weights, cpu);
      deviceFuse.unfuse();
      deviceFuse = there.fuseInto(deviceTarget);
      long differingKept = Devices.compare(weights, cpu).differingElements();
      deviceFuse.unfuse();
      deviceTarget.trim();
      cpuFuse.unfuse();
      Devices.await(last);
      long notRestored = 0;
      for (Map.Entry<String, NDArray> weight : weights.entrySet()) {
        boolean restored =
            Devices.differingElements(weight.getValue(), originals.get(weight.getKey())) == 0
                && Devices.differingElements(cpu.get(weight.getKey()), originals.get(weight.getKey())) == 0;
        notRestored += restored ? 0 : 1;
      }
      Map<String, Object> row = new LinkedHashMap<>();
      row.put("name", "bytes/" + type);
      row.put("weights", weights.size());
      row.put("elements", copied.elements());
      row.put("differing_elements", copied.differingElements());
      row.put("differing_weights", copied.differingWeights());
      row.put("differing_elements_factors_kept", differingKept);
      row.put("not_restored_weights", notRestored);
      row.put("device_fuse_s", deviceSeconds);
      row.put("cpu_fuse_s", cpuSeconds);
      record(row);
      if (copied.differingElements() != 0 || differingKept != 0 || notRestored != 0) {
        errors.add(
            String.format(
                Locale.ROOT,
                "bytes/%s: %d elements in %d weights differ from the CPU's fuse, %d with the factors kept on the device; %d weights not restored",
                type, copied.differingElements(), copied.differingWeights(), differingKept, notRestored));
      }
    }
  }

  /** One merge method on the device, timed, and its factors compared with the CPU's. */
  private void timeMerge(LoraAdapter style, LoraAdapter subject, String method) {
    MergeAlgorithm algorithm = MergeMethod.parse(method).create(OptionalDouble.of(DENSITY), MajoritySign.TOTAL, 0);
    LoraMerger.Builder builder = LoraMerger.builder().add(style, STYLE_WEIGHT).add(subject, SUBJECT_WEIGHT).algorithm(algorithm);
    if (algorithm.requirements().reRanked()) {
      builder.rank(rank);
    }
    LoraMerger merger = builder.device(device).threads(threads).build();
    double[] times = new double[runs];
    LoraAdapter merged = timedMerges(merger, times);
    LoraAdapter onCpu = merger.toBuilder().device(Device.cpu()).build().merge();
    Map<String, Object> row = timing("merge/" + method, times);
    row.put("modules", merged.size());
    row.put("differing_modules_vs_cpu", differingModules(merged, onCpu));
    record(row);
    if (OrderedKernels.available(device) && !row.get("differing_modules_vs_cpu").equals(0L)) {
      errors.add("merge/" + method + ": " + row.get("differing_modules_vs_cpu") + " modules differ from the CPU's merge");
    }
    if (algorithm.taskArithmetic().isPresent() && TaskKernels.available(device)) {
      double[] onHost = new double[runs];
      System.setProperty(TaskKernels.ON_HOST_PROPERTY, "true");
      LoraAdapter hostTasks;
      try {
        hostTasks = timedMerges(merger, onHost);
      } finally {
        System.clearProperty(TaskKernels.ON_HOST_PROPERTY);
      }
      Map<String, Object> hostRow = timing("merge/" + method + "/tasks-on-host", onHost);
      hostRow.put("modules", hostTasks.size());
      hostRow.put("differing_modules_vs_device_tasks", differingModules(hostTasks, merged));
      record(hostRow);
      if (!hostRow.get("differing_modules_vs_device_tasks").equals(0L)) {
        errors.add("merge/" + method + ": the task kernels' merge differs from the host's in "
            + hostRow.get("differing_modules_vs_device_tasks") + " modules");
      }
    }
  }

  /** A warm-up merge, then one per element of {@code times}, timed into it; the last result. */
  private static LoraAdapter timedMerges(LoraMerger merger, double[] times) {
    LoraAdapter merged = merger.merge();
    for (int run = 0; run < times.length; run++) {
      long start = System.nanoTime();
      merged = merger.merge();
      times[run] = seconds(start);
    }
    return merged;
  }

  /** The modules that are not equal in both adapters, or are in one only. */
  private static long differingModules(LoraAdapter merged, LoraAdapter other) {
    long differing = 0;
    for (Map.Entry<ModuleKey, LoraModule> module : other.modules().entrySet()) {
      LoraModule same = merged.modules().get(module.getKey());
      if (same == null || !module.getValue().equals(same)) {
        differing++;
      }
    }
    return differing + merged.modules().keySet().stream().filter(key -> !other.modules().containsKey(key)).count();
  }

  /**
   * Seeded base weights for {@code adapter}'s modules, named {@code <path>.weight}, of entries of
   * standard deviation 1/√fan-in (as PyTorch initializes layers), made by libtorch on the CPU.
   */
  private static Map<String, NDArray> baseWeights(NDManager host, LoraAdapter adapter, DataType type) {
    Engine.getInstance().setRandomSeed((int) BASE_SEED);
    Map<String, NDArray> weights = new LinkedHashMap<>();
    for (LoraModule module : adapter.modules().values()) {
      long fanIn = module.inFeatures() * module.kernelSize() * module.kernelSize();
      weights.put(module.key().path() + ".weight", Devices.gaussian(host, new Shape(module.weightShape()), 1 / Math.sqrt(fanIn), type));
    }
    return weights;
  }

  /** Copies of {@code arrays} on {@code manager}'s device, owned by it. */
  private static Map<String, NDArray> copies(Map<String, NDArray> arrays, NDManager manager) {
    Map<String, NDArray> copies = new LinkedHashMap<>();
    arrays.forEach((name, array) -> copies.put(name, Devices.copyTo(array, manager)));
    return copies;
  }

  private Object memoryJson() {
    OptionalLong used = Devices.memoryUsed(device);
    return used.isPresent() ? used.getAsLong() : null;
  }

  private static DataType dataType(DType type) {
    return switch (type) {
      case F32 -> DataType.FLOAT32;
      case F16 -> DataType.FLOAT16;
      case BF16 -> DataType.BFLOAT16;
      default -> throw new IllegalArgumentException("not compared: " + type);
    };
  }

  private static Map<String, Object> timing(String name, double[] seconds) {
    double[] sorted = seconds.clone();
    Arrays.sort(sorted);
    Map<String, Object> row = new LinkedHashMap<>();
    row.put("name", name);
    row.put("median_s", sorted[sorted.length / 2]);
    row.put("min_s", sorted[0]);
    row.put("max_s", sorted[sorted.length - 1]);
    row.put("runs", sorted.length);
    return row;
  }

  private void record(Map<String, Object> row) {
    operations.add(row);
    StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "%-22s", row.get("name")));
    row.forEach(
        (key, value) -> {
          if (!key.equals("name")) {
            line.append(' ').append(key).append('=').append(value instanceof Double d ? String.format(Locale.ROOT, "%.4g", d) : value);
          }
        });
    System.out.println(line);
  }

  /** The report so far, to {@code --json}'s file, through a temporary file renamed into place. */
  private void write() throws IOException {
    if (json == null) {
      return;
    }
    Path temporary = json.resolveSibling(json.getFileName() + ".tmp");
    Files.writeString(temporary, Json.write(report, true), StandardCharsets.UTF_8);
    Files.move(temporary, json, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
  }

  private static double seconds(long start) {
    return (System.nanoTime() - start) / 1e9;
  }

  private static long product(long[] shape) {
    return Arrays.stream(shape).reduce(1, Math::multiplyExact);
  }

  private static String value(List<String> args, int i, String option) {
    if (i >= args.size()) {
      throw new IllegalArgumentException(option + " needs a value\n" + USAGE);
    }
    return args.get(i);
  }

  private static int positive(String option, String value) {
    try {
      int number = Integer.parseInt(value);
      if (number > 0) {
        return number;
      }
    } catch (NumberFormatException e) {
      // Reported below, as any other value that is not a positive integer.
    }
    throw new IllegalArgumentException(option + " takes a positive integer, got '" + value + "'\n" + USAGE);
  }
}

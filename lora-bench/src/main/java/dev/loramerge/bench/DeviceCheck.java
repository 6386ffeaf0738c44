package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.Component;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.LoraMergeException;
import dev.loramerge.LoraModule;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.algorithms.Breadcrumbs;
import dev.loramerge.algorithms.DareLinear;
import dev.loramerge.algorithms.DareTies;
import dev.loramerge.algorithms.Della;
import dev.loramerge.algorithms.MagnitudePrune;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.algorithms.Ties;
import dev.loramerge.internal.fuse.TaskKernels;
import dev.loramerge.internal.json.Json;
import dev.loramerge.internal.linalg.Randoms;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Function;

/**
 * {@code bin/lora-bench check --device gpu|cpu [--seed S] [--modules N] [--require-bf16] [--json
 * FILE]}: whether fusing into weights on the device writes the same bytes as fusing into the same
 * weights on the CPU, for fp32, fp16 and bf16 weights. Each type gets an adapter of {@code
 * --modules} seeded random modules: Linear and Conv2d (4-D weights, 1×1 and 3×3 kernels) of
 * random sizes, ranks and alphas, with fp32, fp16 (and where the JNI library holds it, bf16)
 * factors, and a block of one row or column among them. Two fuses of different adapters are
 * stacked, then the same two at minus half their weight (the device's target keeps the adapters'
 * factors there, so these read them from what the first two kept), then all are undone in the
 * order they were made in reverse, and every weight must be back to its original bytes on both
 * devices.
 *
 * <p>fp16 and bf16 also get an {@code overflow} row: a fuse whose update leaves the weights' range
 * in two modules must fail on the device with the CPU's message, for the same module, and leave
 * every weight as it was (on a GPU with the kernels, the failing batch is found by the device
 * after later batches were queued).
 *
 * <p>fp16 and bf16 also get rows whose float64 sums land on a rounding tie in the host's order of
 * additions and off it in others (the {@code summation order} rows): on a GPU they are compared
 * where the CUDA kernels are loaded, which form the sums in that order; libtorch's products
 * (cuBLAS) take their own.
 *
 * <p>On a GPU with the CUDA kernels, the {@code merge} rows merge three adapters by each method
 * the merger runs as task arithmetic on the device, once with the kernels and once with the
 * method's own merge on the host before the same device SVD: every merged tensor must have the
 * same bytes, and the kernels must have merged at least one batch.
 *
 * <p>bf16 is first tried in a JVM of its own ({@link Devices#probeBf16}): DJL 0.35.1's JNI library
 * aborts the process on a bf16 tensor. {@code --require-bf16} makes that a failure (the JNI library
 * built by gpu/build-djl-jni.sh with gpu/patches must pass); without it bf16 is reported skipped.
 * Exit status 0 when every compared byte and every restored weight is equal, 1 when not.
 */
final class DeviceCheck {
  /** What the device's target keeps of the adapters' factors there: all of the check's. */
  private static final long KEPT_FACTOR_BYTES = 1L << 28;

  static final String USAGE = "usage: bin/lora-bench check [--device gpu|cpu] [--seed S] [--modules N] [--require-bf16] [--json FILE]";

  private DeviceCheck() {}

  static int run(List<String> args) throws IOException {
    String deviceName = "gpu";
    long seed = 1;
    int modules = 24;
    boolean requireBf16 = false;
    Path json = null;
    for (int i = 0; i < args.size(); i++) {
      String option = args.get(i);
      switch (option) {
        case "--device" -> deviceName = value(args, ++i, option);
        case "--seed" -> seed = Long.parseLong(value(args, ++i, option));
        case "--modules" -> modules = Integer.parseInt(value(args, ++i, option));
        case "--require-bf16" -> requireBf16 = true;
        case "--json" -> json = Path.of(value(args, ++i, option));
        default -> throw new IllegalArgumentException("unknown option " + option + "\n" + USAGE);
      }
    }
    Device device = Devices.parse(deviceName, "run with --device cpu to check the CPU path against itself");
    Engine engine = Engine.getInstance();
    System.out.printf(Locale.ROOT, "check on %s (%s %s, %d GPUs)%n", device, engine.getEngineName(), engine.getVersion(), engine.getGpuCount());
    Map<String, Object> report = new LinkedHashMap<>();
    report.put("device", device.toString());
    report.put("engine", engine.getEngineName() + " " + engine.getVersion());
    report.put("seed", seed);
    List<String> failures = new ArrayList<>();
    Devices.Bf16 bf16 = Devices.probeBf16(device);
    report.put("bf16", bf16.json());
    System.out.println("bf16: " + bf16.message());
    if (!bf16.supported() && requireBf16) {
      failures.add("bf16: " + bf16.message());
    }
    List<Map<String, Object>> rows = new ArrayList<>();
    for (DType type : List.of(DType.F32, DType.F16, DType.BF16)) {
      if (type == DType.BF16 && !bf16.supported()) {
        System.out.println("BF16 weights skipped: " + bf16.message());
        continue;
      }
      SplittableRandom random = new SplittableRandom(Randoms.streamSeed(seed, type.name(), 0, "check"));
      List<DType> factorTypes = bf16.supported() ? List.of(DType.F32, DType.F16, DType.BF16) : List.of(DType.F32, DType.F16);
      LoraAdapter first = adapter("first", random, seed, modules, factorTypes);
      LoraAdapter second = adapter("second", random, seed, modules, factorTypes);
      long weightSeed = random.nextLong();
      Map<String, Object> row = compare(device, List.of(first, second), 0.8, host -> gaussianWeights(host, first, type, weightSeed));
      record(type.name(), row, rows, failures);
    }
    for (DType type : List.of(DType.F16, DType.BF16)) {
      if (type == DType.BF16 && !bf16.supported()) {
        continue;
      }
      if (device.isGpu() && System.getProperty(KERNELS_PROPERTY, "").isEmpty()) {
        System.out.println(type + " summation order skipped: without the CUDA kernels (" + KERNELS_PROPERTY
            + ") the device's float64 products are libtorch's, in cuBLAS's order");
        continue;
      }
      LoraAdapter order = orderAdapter(type);
      Map<String, Object> row = compare(device, List.of(order), 1.0, host -> zeroWeights(host, order, type));
      record(type.name() + " summation order", row, rows, failures);
    }
    for (DType type : List.of(DType.F16, DType.BF16)) {
      if (type == DType.BF16 && !bf16.supported()) {
        continue;
      }
      record(type.name() + " overflow", overflow(device, type, seed), rows, failures);
    }
    for (MergeAlgorithm method : MERGE_METHODS) {
      if (!device.isGpu() || System.getProperty(KERNELS_PROPERTY, "").isEmpty()) {
        System.out.println("merges skipped: the task kernels run on a GPU where " + KERNELS_PROPERTY + " names them");
        break;
      }
      recordMerge(method, mergesAlike(device, method, seed), rows, failures);
    }
    report.put("results", rows);
    report.put("failures", failures);
    if (json != null) {
      Files.writeString(json, Json.write(report, true), StandardCharsets.UTF_8);
    }
    System.out.println(failures.isEmpty() ? "CHECK OK" : "CHECK FAILED: " + String.join("; ", failures));
    return failures.isEmpty() ? 0 : 1;
  }

  /** The system property that names the CUDA kernel library (see gpu/README.md). */
  private static final String KERNELS_PROPERTY = "loramerge.cuda.kernels";
  /**
   * The methods the merger runs as task arithmetic on a GPU, with both sign elections, and DELLA
   * also with no draw for the smallest entry of a row (epsilon = density).
   */
  private static final List<MergeAlgorithm> MERGE_METHODS = List.of(
      Ties.of(0.45).onUpdates(),
      Ties.of(0.45).withMajoritySign(MajoritySign.FREQUENCY).onUpdates(),
      MagnitudePrune.of(0.45).onUpdates(),
      DareLinear.of(0.45).withSeed(7).onUpdates(),
      DareTies.of(0.45).withSeed(7).withMajoritySign(MajoritySign.FREQUENCY).onUpdates(),
      Breadcrumbs.of(0.45),
      Della.of(0.45).withSeed(7),
      Della.of(0.3).withEpsilon(0.3).withMajoritySign(MajoritySign.FREQUENCY).withSeed(7));

  private static void record(String name, Map<String, Object> counts, List<Map<String, Object>> rows, List<String> failures) {
    boolean failed = !counts.get("differing_elements").equals(0L) || !counts.get("not_restored_weights").equals(0L)
        || Boolean.FALSE.equals(counts.get("same_failure"));
    record("dtype", name, counts, failed, rows, failures);
  }

  private static void recordMerge(
      MergeAlgorithm method, Map<String, Object> counts, List<Map<String, Object>> rows, List<String> failures) {
    boolean failed = !counts.get("differing_tensors").equals(0L) || !counts.get("differing_tensors_vs_cpu").equals(0L)
        || counts.get("device_batches").equals(0L);
    record("merge", method.toString(), counts, failed, rows, failures);
  }

  /** Adds a row {@code label: name} and its counts to {@code rows}, printed, and to the failures where {@code failed}. */
  private static void record(
      String label, String name, Map<String, Object> counts, boolean failed, List<Map<String, Object>> rows, List<String> failures) {
    Map<String, Object> row = new LinkedHashMap<>();
    row.put(label, name);
    row.putAll(counts);
    rows.add(row);
    System.out.println(row);
    if (failed) {
      failures.add(String.format(Locale.ROOT, "%s %s: %s", label, name, row));
    }
  }

  /**
   * Merges three adapters by {@code method} on the device twice, the pruned updates made by the
   * task kernels and then by the method on the host ({@value TaskKernels#ON_HOST_PROPERTY}), one
   * thread each, and once on the CPU: the randomized SVD after them is the same device code on the
   * same batches, so every merged tensor must have the same bytes when the kernels give the host's
   * updates, and the CPU's bytes when the ordered product kernels give the host's products.
   */
  private static Map<String, Object> mergesAlike(Device device, MergeAlgorithm method, long seed) {
    List<LoraAdapter> adapters = new ArrayList<>();
    for (String name : List.of("first", "second", "third")) {
      adapters.add(mergeAdapter(name, Randoms.streamSeed(seed, name, 0, "merge check")));
    }
    long batchesBefore = TaskKernels.batches();
    LoraAdapter kernels = mergeOn(device, method, adapters);
    long batches = TaskKernels.batches() - batchesBefore;
    LoraAdapter host;
    System.setProperty(TaskKernels.ON_HOST_PROPERTY, "true");
    try {
      host = mergeOn(device, method, adapters);
    } finally {
      System.clearProperty(TaskKernels.ON_HOST_PROPERTY);
    }
    Map<String, Object> row = new LinkedHashMap<>();
    row.put("modules", kernels.modules().size());
    row.put("device_batches", batches);
    row.put("differing_tensors", differingTensors(kernels, host));
    row.put("differing_tensors_vs_cpu", differingTensors(kernels, mergeOn(Device.cpu(), method, adapters)));
    return row;
  }

  private static long differingTensors(LoraAdapter merged, LoraAdapter other) {
    long differing = 0;
    for (Map.Entry<ModuleKey, LoraModule> module : merged.modules().entrySet()) {
      LoraModule same = other.modules().get(module.getKey());
      differing += module.getValue().up().equals(same.up()) ? 0 : 1;
      differing += module.getValue().down().equals(same.down()) ? 0 : 1;
    }
    return differing;
  }

  private static LoraAdapter mergeOn(Device device, MergeAlgorithm method, List<LoraAdapter> adapters) {
    LoraMerger.Builder merger = LoraMerger.builder()
        .algorithm(method)
        .device(device)
        .threads(1)
        .rank(8);
    double[] weights = {0.7, -0.4, 1.3};
    for (int i = 0; i < adapters.size(); i++) {
      merger.add(adapters.get(i), weights[i]);
    }
    return merger.merge();
  }

  /**
   * Modules the device merges by the randomized SVD, in batches of one and two: factors in
   * quarters (many updates of equal magnitude, so the magnitude cut drops some of the ties) or
   * Gaussian, ranks 4 to 16; the third adapter lacks one module, so a batch's modules have
   * different numbers of inputs.
   */
  private static LoraAdapter mergeAdapter(String name, long seed) {
    SplittableRandom random = new SplittableRandom(seed);
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(name);
    long[][] shapes = {{384, 512}, {512, 512}, {512, 512}, {640, 320}, {320, 64, 3, 3}};
    for (int i = 0; i < shapes.length; i++) {
      if (name.equals("third") && i == 2) {
        continue;
      }
      long out = shapes[i][0];
      long in = TensorData.numel(shapes[i]) / out;
      int rank = 4 + random.nextInt(13);
      boolean quarters = i % 2 == 0;
      long[] downShape = shapes[i].length == 4 ? new long[] {rank, shapes[i][1], 3, 3} : new long[] {rank, in};
      long[] upShape = shapes[i].length == 4 ? new long[] {out, rank, 1, 1} : new long[] {out, rank};
      TensorData down = quarters ? quarters(random, downShape) : gaussian(random, 1 / Math.sqrt(in), DType.F32, downShape);
      TensorData up = quarters ? quarters(random, upShape) : gaussian(random, 0.02, DType.F16, upShape);
      adapter.add(LoraModule.of(ModuleKey.of(Component.UNET, "merge.m" + i), down, up, rank * 0.5));
    }
    return adapter.build();
  }

  private static TensorData quarters(SplittableRandom random, long[] shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = (random.nextInt(9) - 4) / 4.0;
    }
    return TensorData.ofDoubles(values, DType.F32, shape);
  }

  private static DataType dataType(DType type) {
    return type == DType.F32 ? DataType.FLOAT32 : type == DType.F16 ? DataType.FLOAT16 : DataType.BFLOAT16;
  }

  private static Map<String, NDArray> gaussianWeights(NDManager host, LoraAdapter adapter, DType type, long seed) {
    Engine.getInstance().setRandomSeed((int) seed);
    Map<String, NDArray> weights = new LinkedHashMap<>();
    for (LoraModule module : adapter.modules().values()) {
      long fanIn = module.inFeatures() * module.kernelSize() * module.kernelSize();
      weights.put(module.key().path() + ".weight", Devices.gaussian(host, new Shape(module.weightShape()), 1 / Math.sqrt(fanIn), dataType(type)));
    }
    return weights;
  }

  private static Map<String, NDArray> zeroWeights(NDManager host, LoraAdapter adapter, DType type) {
    Map<String, NDArray> weights = new LinkedHashMap<>();
    for (LoraModule module : adapter.modules().values()) {
      weights.put(module.key().path() + ".weight", host.zeros(new Shape(module.weightShape()), dataType(type)));
    }
    return weights;
  }

  /**
   * One module whose rows' float64 sums depend on the order of the additions and land on a tie of
   * {@code type} in the host's order (lora-core's NarrowFusionTest pins that order and explains the
   * rows): fused with weight 1 into zero weights, the GPU's kernel must give the host's bytes.
   */
  private static LoraAdapter orderAdapter(DType type) {
    double big = 0x1p40;
    double small = 0x1p-40;
    double tie = type == DType.F16 ? 1 + 0x1p-11 : 1 + 0x1p-8;
    double[] up = {
      big, tie, -big, small, 0, 0, 0,
      big, -big, tie, 0, 0, 0, small,
      small, big, tie, -big, 0, 0, 0,
      tie, 0, 0, 0, 0, 0, small,
    };
    int rank = 7;
    double[] down = new double[rank * 8];
    Arrays.fill(down, 1);
    return LoraAdapter.builder()
        .name("order")
        .add(LoraModule.of(
            ModuleKey.of(Component.UNET, "check.order"),
            TensorData.ofDoubles(down, DType.F32, rank, 8),
            TensorData.ofDoubles(up, DType.F32, 4, rank),
            rank))
        .build();
  }

  /**
   * Fuses the adapters one after the other at {@code adapterWeight}, then again at minus half of
   * it, into the weights {@code originals} makes on the host, on both devices; compares after
   * each, undoes, compares. The device's target keeps the adapters' factors there, so the second
   * round reads them from what the first kept, with other coefficients.
   */
  private static Map<String, Object> compare(
      Device device, List<LoraAdapter> adapters, double adapterWeight, Function<NDManager, Map<String, NDArray>> originalsOf)
      throws IOException {
    try (NDManager host = NDManager.newBaseManager(Device.cpu());
        NDManager onDevice = NDManager.newBaseManager(device)) {
      Map<String, NDArray> cpu = originalsOf.apply(host);
      Map<String, NDArray> originals = copies(cpu, host);
      Map<String, NDArray> weights = copies(cpu, onDevice);
      WeightTarget cpuTarget = WeightTarget.of(cpu);
      WeightTarget deviceTarget = WeightTarget.builder().weights(weights).keepFactorsOnDevice(KEPT_FACTOR_BYTES).build();
      List<FusedLora> fuses = new ArrayList<>();
      Devices.Comparison compared = Devices.Comparison.NONE;
      for (double roundWeight : new double[] {adapterWeight, -0.5 * adapterWeight}) {
        for (LoraAdapter adapter : adapters) {
          LoraFuser onCpu = LoraFuser.of(LoraMerger.builder().add(adapter, roundWeight).device(Device.cpu()).build());
          LoraFuser there = LoraFuser.of(LoraMerger.builder().add(adapter, roundWeight).device(device).build());
          fuses.add(onCpu.fuseInto(cpuTarget));
          fuses.add(there.fuseInto(deviceTarget));
          compared = compared.plus(Devices.compare(weights, cpu));
        }
      }
      for (int i = fuses.size() - 1; i >= 0; i--) {
        fuses.get(i).unfuse();
      }
      deviceTarget.trim();
      long notRestored = 0;
      for (Map.Entry<String, NDArray> weight : weights.entrySet()) {
        NDArray original = originals.get(weight.getKey());
        if (Devices.differingElements(weight.getValue(), original) != 0 || Devices.differingElements(cpu.get(weight.getKey()), original) != 0) {
          notRestored++;
        }
      }
      Map<String, Object> row = new LinkedHashMap<>();
      row.put("weights", weights.size());
      row.put("conv_weights", weights.values().stream().filter(array -> array.getShape().dimension() == 4).count());
      row.put("elements_compared", compared.elements());
      row.put("differing_elements", compared.differingElements());
      row.put("differing_weights", compared.differingWeights());
      row.put("not_restored_weights", notRestored);
      return row;
    }
  }

  /** A copy of each of {@code arrays} in {@code manager}, on its device. */
  private static Map<String, NDArray> copies(Map<String, NDArray> arrays, NDManager manager) {
    Map<String, NDArray> copies = new LinkedHashMap<>();
    arrays.forEach((name, array) -> copies.put(name, Devices.copyTo(array, manager)));
    return copies;
  }

  /**
   * A fuse that must fail: five modules of three shapes (three batches on the device), the third
   * and fourth with an update beyond {@code type}'s range at one element. On both devices the fuse
   * must throw the same message, for the third module (the first failing one in the host's order
   * and in the first failing batch), and leave every weight as it was.
   */
  private static Map<String, Object> overflow(Device device, DType type, long seed) throws IOException {
    LoraAdapter adapter = overflowAdapter(type);
    try (NDManager host = NDManager.newBaseManager(Device.cpu());
        NDManager onDevice = NDManager.newBaseManager(device)) {
      Map<String, NDArray> cpu = gaussianWeights(host, adapter, type, seed);
      Map<String, NDArray> originals = copies(cpu, host);
      Map<String, NDArray> weights = copies(cpu, onDevice);
      String onCpu = failure(LoraFuser.of(LoraMerger.builder().add(adapter, 1.0).device(Device.cpu()).build()), WeightTarget.of(cpu));
      String there = failure(LoraFuser.of(LoraMerger.builder().add(adapter, 1.0).device(device).build()), WeightTarget.of(weights));
      long differing = 0;
      long notRestored = 0;
      long elements = 0;
      for (Map.Entry<String, NDArray> weight : weights.entrySet()) {
        NDArray original = originals.get(weight.getKey());
        long changed = Devices.differingElements(weight.getValue(), original) + Devices.differingElements(cpu.get(weight.getKey()), original);
        elements += 2 * original.size();
        differing += changed;
        notRestored += changed == 0 ? 0 : 1;
      }
      Map<String, Object> row = new LinkedHashMap<>();
      row.put("weights", weights.size());
      row.put("conv_weights", 0L);
      row.put("elements_compared", elements);
      row.put("differing_elements", differing);
      row.put("differing_weights", notRestored);
      row.put("not_restored_weights", notRestored);
      row.put("cpu_failure", onCpu);
      row.put("device_failure", there);
      row.put("same_failure", onCpu.equals(there) && onCpu.contains("check.m2"));
      return row;
    }
  }

  /** The message of the failure of {@code fuser}'s fuse into {@code target}, or "none" where it did not fail. */
  private static String failure(LoraFuser fuser, WeightTarget target) throws IOException {
    try {
      fuser.fuseInto(target);
      return "none";
    } catch (LoraMergeException e) {
      return e.getMessage();
    }
  }

  /**
   * The modules of {@link #overflow}: {@code check.m0} to {@code check.m4} of shapes A, B, B, C, A,
   * rank 2, float32 factors of a few hundredths, and in {@code m2} and {@code m3} one element whose
   * update is 10⁶ (fp16) or 10⁴⁰ (bf16), beyond the largest finite value.
   */
  private static LoraAdapter overflowAdapter(DType type) {
    long[][] shapes = {{48, 40}, {24, 72}, {24, 72}, {56, 32}, {48, 40}};
    double big = type == DType.F16 ? 1e3 : 1e20;
    int rank = 2;
    LoraAdapter.Builder adapter = LoraAdapter.builder().name("overflow");
    SplittableRandom random = new SplittableRandom(Randoms.streamSeed(shapes.length, type.name(), 0, "overflow"));
    for (int i = 0; i < shapes.length; i++) {
      long out = shapes[i][0];
      long in = shapes[i][1];
      double[] up = new double[Math.toIntExact(out * rank)];
      double[] down = new double[Math.toIntExact(rank * in)];
      for (int k = 0; k < up.length; k++) {
        up[k] = 0.05 * Randoms.standardNormal(random);
      }
      for (int k = 0; k < down.length; k++) {
        down[k] = 0.05 * Randoms.standardNormal(random);
      }
      if (i == 2 || i == 3) {
        // Element (5, 3): up's row 5 and down's column 3 meet at rank 0 only.
        up[5 * rank] = big;
        up[5 * rank + 1] = 0;
        down[3] = big;
        down[(int) in + 3] = 0;
      }
      adapter.add(LoraModule.of(
          ModuleKey.of(Component.UNET, "check.m" + i),
          TensorData.ofDoubles(down, DType.F32, rank, in),
          TensorData.ofDoubles(up, DType.F32, out, rank),
          rank));
    }
    return adapter.build();
  }

  /**
   * {@code count} random modules named {@code check.m<i>} (the same names and shapes, drawn from
   * {@code seed}, in both adapters): every third a Conv2d, sizes 1 to 192, ranks 1 to 16, alpha 0.5 to 2 times the
   * rank, factors in a random one of {@code factorTypes} with entries of a few hundredths.
   */
  private static LoraAdapter adapter(String name, SplittableRandom random, long seed, int count, List<DType> factorTypes) {
    LoraAdapter.Builder adapter = LoraAdapter.builder().name(name);
    SplittableRandom shapes = new SplittableRandom(Randoms.streamSeed(seed, "shapes", count, "check"));
    for (int i = 0; i < count; i++) {
      boolean conv = i % 3 == 2;
      // One module has one row and one a single column: the edges of the fuse's blocking.
      long out = i == 0 ? 1 : 1 + shapes.nextInt(192);
      long in = i == 1 ? 1 : 1 + shapes.nextInt(192);
      long kernel = conv && shapes.nextBoolean() ? 3 : 1;
      int rank = 1 + random.nextInt(16);
      DType factorType = factorTypes.get(random.nextInt(factorTypes.size()));
      long[] downShape = conv ? new long[] {rank, in, kernel, kernel} : new long[] {rank, in};
      long[] upShape = conv ? new long[] {out, rank, 1, 1} : new long[] {out, rank};
      TensorData down = gaussian(random, 1 / Math.sqrt(in * kernel * kernel), factorType, downShape);
      TensorData up = gaussian(random, 0.02, factorType, upShape);
      double alpha = rank * (0.5 + 1.5 * random.nextDouble());
      adapter.add(LoraModule.of(ModuleKey.of(Component.UNET, "check.m" + i), down, up, alpha));
    }
    return adapter.build();
  }

  private static TensorData gaussian(SplittableRandom random, double deviation, DType type, long[] shape) {
    double[] values = new double[Math.toIntExact(TensorData.numel(shape))];
    for (int i = 0; i < values.length; i++) {
      values[i] = Randoms.standardNormal(random) * deviation;
    }
    return TensorData.ofDoubles(values, type, shape);
  }

  private static String value(List<String> args, int i, String option) {
    if (i >= args.size()) {
      throw new IllegalArgumentException(option + " needs a value\n" + USAGE);
    }
    return args.get(i);
  }
}

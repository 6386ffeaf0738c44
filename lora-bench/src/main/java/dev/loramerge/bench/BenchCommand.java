package dev.loramerge.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.LoraAdapter;
import dev.loramerge.ModuleKey;
import dev.loramerge.TensorData;
import dev.loramerge.algorithms.MajoritySign;
import dev.loramerge.arch.Architecture;
import dev.loramerge.arch.ModuleSpec;
import dev.loramerge.algorithms.MergeMethod;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.LoraFormat;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.io.SafetensorsWeights;
import dev.loramerge.merge.LoraMerger;
import dev.loramerge.merge.MergeAlgorithm;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;

/**
 * {@code bin/lora-bench e2e [--rank R] [--runs N] [--methods a,b] [--skip-merge] [--skip-fuse]
 * [--cache DIR] [--json FILE] [--vs-pytorch [--python PATH] [--pytorch-svd-every N]]}: the
 * benchmark's end-to-end workload, in one JVM after a warm-up. {@code --skip-merge}
 * leaves out every merge, {@code --skip-fuse} every fuse.
 *
 * <p>Two SDXL-shaped rank-R attention LoRAs (722 modules; alphas 32 and 16), weights 0.7 / 0.5,
 * density 0.5, target rank R: every merge method in memory ({@code merge/<method>}), the cat merge
 * file to file ({@code merge/file}: two kohya files in, one out), the first adapter fused into the
 * fp16 base UNet file to file ({@code fuse/file}) and into its weights held as NDArrays ({@code
 * fuse/memory}: one target, unfused after each run, so the timed fuses copy the weights into the
 * memory the warm-up's copies left, as in a process that swaps LoRAs; the first fuse into a
 * target also pays for that memory's page faults). Prints median and min–max seconds, peak heap and peak process RSS per operation,
 * the most minor page faults of one timed run in thousands ({@code faults_k}; JSON {@code
 * max_minor_faults}), and for the randomized re-rankers their distance from the exact truncation and how much larger
 * their truncation error is than the optimum's ({@link ReRankError}, on 24 modules spread over
 * the adapter, outside the timed runs). Run from {@code bin/lora-bench}, it also times the whole
 * {@code bin/lora merge} and {@code bin/lora fuse} commands on the same files as child processes
 * ({@code command/merge}, {@code command/fuse}: wall seconds including JVM start, and the child's
 * peak RSS).
 *
 * <p>{@code --vs-pytorch} then runs the same in-memory operations (the PEFT methods among {@code
 * --methods}, and {@code fuse/memory}) through PEFT's arithmetic in PyTorch on the CPU ({@link
 * PytorchBaseline}) and prints both medians and their ratio; ratios from one run are what compare,
 * absolute seconds drift between machines. PyTorch's {@code *_svd} methods take about a second a
 * module, so they are timed on every Nth module (default 10) and scaled.
 *
 * <p>{@code device} ({@link DeviceBench}) and {@code check} ({@link DeviceCheck}) run the
 * in-memory workload with the weights on a chosen device, for GPU machines (gpu/README.md);
 * {@code shapes} prints the attention weights' shapes for gpu/'s PyTorch side.
 */
public final class BenchCommand {
  private static final int ERROR_SAMPLE_MODULES = 24;
  private static final double STYLE_WEIGHT = 0.7;
  private static final double SUBJECT_WEIGHT = 0.5;
  private static final double DENSITY = 0.5;
  /** PEFT's eleven combination types, the methods both sides have. */
  private static final List<String> PEFT_METHODS = Arrays.stream(MergeMethod.values()).filter(MergeMethod::inPeft).map(MergeMethod::methodName).toList();

  private BenchCommand() {}

  private static final String USAGE =
      "usage: bin/lora-bench e2e [--rank R] [--runs N] [--methods a,b] [--skip-merge] [--skip-fuse] [--cache DIR] [--json FILE]"
          + " [--vs-pytorch [--python PATH] [--pytorch-svd-every N]]\n"
          + "       " + DeviceBench.USAGE.substring("usage: ".length()) + "\n"
          + "       " + DeviceCheck.USAGE.substring("usage: ".length()) + "\n"
          + "       " + FluxBench.USAGE.substring("usage: ".length()) + "\n"
          + "       bin/lora-bench shapes   (the SDXL attention weights' names and shapes, for gpu/peft_gpu.py)\n"
          + "JMH kernels: java -jar lora-bench/target/benchmarks.jar";

  public static void main(String[] args) throws IOException {
    if (args.length > 0 && isHelp(args[0])) {
      help();
    }
    if (args.length > 0 && args[0].equals("flux")) {
      System.exit(FluxBench.run(Arrays.asList(args).subList(1, args.length)));
    }
    if (args.length > 0 && List.of("device", "check", "shapes").contains(args[0])) {
      System.exit(onDevice(args[0], Arrays.asList(args).subList(1, args.length)));
    }
    if (args.length == 0 || !args[0].equals("e2e")) {
      usage(null);
    }
    int rank = 32;
    int runs = 3;
    List<String> methods = new ArrayList<>(PEFT_METHODS);
    Path json = null;
    boolean merge = true;
    boolean fuse = true;
    boolean vsPytorch = false;
    String python = PytorchBaseline.DEBIAN_PYTHON;
    int svdEvery = 10;
    Path cache = Path.of(System.getProperty("user.home"), ".cache", "loramerge-bench");
    for (int i = 1; i < args.length; i++) {
      switch (args[i]) {
        case "--rank" -> rank = number(args[i], value(args, ++i));
        case "--runs" -> runs = number(args[i], value(args, ++i));
        case "--methods" -> methods = Arrays.asList(value(args, ++i).split(","));
        case "--json" -> json = Path.of(value(args, ++i));
        case "--cache" -> cache = Path.of(value(args, ++i));
        case "--skip-merge" -> merge = false;
        case "--skip-fuse" -> fuse = false;
        case "--vs-pytorch" -> vsPytorch = true;
        case "--python" -> python = value(args, ++i);
        case "--pytorch-svd-every" -> svdEvery = number(args[i], value(args, ++i));
        case "--help", "-h" -> help();
        default -> usage("unknown option " + args[i]);
      }
    }
    Files.createDirectories(cache);
    // Asked before the long Java part, so that an install prompt does not wait behind it.
    vsPytorch = vsPytorch && PytorchBaseline.ensureReady(python);
    long start = System.nanoTime();
    LoraAdapter style = SdxlData.adapter("style", rank, 32, 1);
    LoraAdapter subject = SdxlData.adapter("subject", rank, 16, 2);
    System.out.printf(Locale.ROOT, "generated 2 × %d modules, rank %d, fp16, in %.1f s%n", style.size(), rank, (System.nanoTime() - start) / 1e9);
    Table table = new Table(runs);
    if (!merge) {
      methods = List.of();
    }
    for (String method : methods) {
      MergeAlgorithm algorithm = MergeMethod.parse(method).create(OptionalDouble.of(DENSITY), MajoritySign.TOTAL, 0);
      LoraMerger.Builder builder =
          LoraMerger.builder().add(style, STYLE_WEIGHT).add(subject, SUBJECT_WEIGHT).algorithm(algorithm);
      if (algorithm.requirements().reRanked()) {
        builder.rank(rank);
      }
      LoraMerger merger = builder.build();
      // svd re-ranks factors, exactly; the others re-rank dense updates by the randomized SVD.
      Optional<ReRankError> error =
          algorithm.requirements().reRanked() && !method.equals("svd")
              ? Optional.of(ReRankError.measure(style, STYLE_WEIGHT, subject, SUBJECT_WEIGHT, algorithm, rank, ERROR_SAMPLE_MODULES))
              : Optional.empty();
      table.time("merge/" + method, merger::merge, error);
    }
    Path styleFile = SdxlData.kohyaFile(cache, style, rank);
    Path subjectFile = SdxlData.kohyaFile(cache, subject, rank);
    Optional<Path> lora = Optional.ofNullable(System.getProperty("loramerge.home")).map(home -> Path.of(home, "bin", "lora"));
    if (merge) {
      timeFileMerges(table, styleFile, subjectFile, cache.resolve("merged-cat.safetensors"), lora);
    }
    if (fuse) {
      Path base = SdxlData.baseUnet(cache);
      Path fused = cache.resolve("fused.fp16.safetensors");
      LoraFuser one = LoraFuser.of(LoraMerger.builder().add(LoraFiles.read(styleFile), 1.0).build());
      table.time("fuse/file", () -> one.fuseInto(SafetensorsWeights.of(base, fused)), Optional.empty());
      if (lora.isPresent()) {
        List<String> command = List.of(lora.get().toString(), "fuse", "--base", base.toString(), "-o", fused.toString(), styleFile + "=1");
        table.command("command/fuse", command, LAUNCHER_CHOICE);
        table.command("command/fuse/plain", command, plainJava());
      }
      Files.deleteIfExists(fused);
      try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
        WeightTarget unet = WeightTarget.of(touchedWeights(manager, base, style));
        table.time(
            "fuse/memory",
            () -> one.fuseInto(unet),
            Optional.empty(),
            result -> ((FusedLora) result).unfuse());
      }
    }
    table.print();
    if (lora.isPresent() && (merge || fuse)) {
      System.out.println(
          "command/*: JVM cache and input digests warm (the untimed first run fills ~/.cache/loramerge);"
              + " command/*/plain: LORA_CACHE=off, every input hashed");
    }
    int status = 0;
    if (vsPytorch) {
      List<String> arguments =
          new ArrayList<>(
              List.of(
                  "--cache", cache.toString(),
                  "--rank", Integer.toString(rank),
                  "--runs", Integer.toString(runs),
                  "--weights", STYLE_WEIGHT + "," + SUBJECT_WEIGHT,
                  "--density", Double.toString(DENSITY),
                  "--svd-every", Integer.toString(svdEvery),
                  "--methods", String.join(",", methods.stream().filter(PEFT_METHODS::contains).toList())));
      if (!fuse) {
        arguments.add("--skip-fuse");
      }
      System.out.println();
      try {
        table.compareWith(PytorchBaseline.run(python, arguments));
        System.out.println();
        System.out.print(table.sideBySide());
      } catch (IOException e) {
        // The Java part's results still count: report, write them, and fail at the end.
        System.err.println("--vs-pytorch failed: " + e.getMessage());
        status = 1;
      }
    }
    if (json != null) {
      Files.writeString(json, table.json(), StandardCharsets.UTF_8);
      System.out.println("wrote " + json);
    }
    if (status != 0) {
      System.exit(status);
    }
  }

  /**
   * Runs {@code device}, {@code check} or {@code shapes}; returns the exit status: 2 with the
   * usage for a bad option, 1 with a one-line message when the device is missing or a check fails.
   */
  private static int onDevice(String command, List<String> args) throws IOException {
    try {
      return switch (command) {
        case "device" -> DeviceBench.run(args);
        case "check" -> DeviceCheck.run(args);
        default -> shapes(args);
      };
    } catch (IllegalArgumentException e) {
      System.err.println("lora-bench " + command + ": " + e.getMessage());
      return 2;
    } catch (IllegalStateException e) {
      System.err.println("lora-bench " + command + ": " + e.getMessage());
      return 1;
    }
  }

  /** Prints {@code <path>.weight rows columns} for each weight the SDXL attention LoRA touches. */
  private static int shapes(List<String> args) {
    if (!args.isEmpty()) {
      throw new IllegalArgumentException("shapes takes no options");
    }
    for (ModuleSpec spec : Architecture.sdxl().modules().values()) {
      if (SdxlData.isAttentionTarget(spec)) {
        long[] shape = spec.weightShape();
        long columns = Arrays.stream(shape).skip(1).reduce(1, Math::multiplyExact);
        System.out.printf(Locale.ROOT, "%s.weight %d %d%n", spec.key().path(), shape[0], columns);
      }
    }
    return 0;
  }

  /** {@code merge/file} in this JVM and, with {@code bin/lora} at hand, {@code command/merge}. */
  private static void timeFileMerges(Table table, Path styleFile, Path subjectFile, Path merged, Optional<Path> lora)
      throws IOException {
    table.time(
        "merge/file",
        () -> {
          LoraAdapter result =
              LoraMerger.builder()
                  .add(LoraFiles.read(styleFile), STYLE_WEIGHT)
                  .add(LoraFiles.read(subjectFile), SUBJECT_WEIGHT)
                  .merge();
          LoraFiles.write(result, merged, LoraFormat.KOHYA);
          return result;
        },
        Optional.empty());
    if (lora.isPresent()) {
      List<String> command =
          List.of(lora.get().toString(), "merge", "-o", merged.toString(), "--format", "kohya", styleFile + "=0.7", subjectFile + "=0.5");
      table.command("command/merge", command, LAUNCHER_CHOICE);
      table.command("command/merge/plain", command, plainJava());
    }
  }

  /**
   * {@code bin/lora} as it runs by default: the newest Java on the machine, with its class-data
   * or AOT cache, which the untimed first run makes if it is missing, and the input digests that
   * run remembers.
   */
  private static final Map<String, String> LAUNCHER_CHOICE = Map.of("LORA_CACHE", "sync");

  /**
   * {@code bin/lora} as it ran before it chose a Java and a cache: the java on the PATH (this
   * harness's, unless {@code LORA_BENCH_PLAIN_JAVA_HOME} names another), no cache.
   */
  private static Map<String, String> plainJava() {
    String home = Optional.ofNullable(System.getenv("LORA_BENCH_PLAIN_JAVA_HOME")).orElse(System.getProperty("java.home"));
    return Map.of("LORA_JAVA_HOME", home, "LORA_CACHE", "off");
  }

  /** The value of the option before {@code args[i]}, or the usage and exit status 2 when it has none. */
  private static String value(String[] args, int i) {
    if (i == args.length) {
      usage(args[i - 1] + " needs a value");
    }
    return args[i];
  }

  /** {@code value} as a positive integer, or the usage and exit status 2. */
  private static int number(String option, String value) {
    try {
      int number = Integer.parseInt(value);
      if (number > 0) {
        return number;
      }
    } catch (NumberFormatException e) {
      // Reported below, as any other value that is not a positive integer.
    }
    usage(option + " takes a positive integer, got '" + value + "'");
    return 0;
  }

  /** Prints {@code problem}, if any, and the usage on stderr, and exits with status 2. */
  private static void usage(String problem) {
    if (problem != null) {
      System.err.println("lora-bench: " + problem);
    }
    System.err.println(USAGE);
    System.exit(2);
  }

  private static boolean isHelp(String arg) {
    return arg.equals("--help") || arg.equals("-h");
  }

  /** Prints the usage on stdout and exits with status 0: asked for, it is not an error. */
  private static void help() {
    System.out.println(USAGE);
    System.exit(0);
  }

  /** The base weights {@code adapter} touches, as fp16 NDArrays (the rest of the UNet plays no part). */
  private static Map<String, NDArray> touchedWeights(NDManager manager, Path base, LoraAdapter adapter) throws IOException {
    Map<String, NDArray> weights = new LinkedHashMap<>();
    try (SafetensorsFile file = SafetensorsFile.open(base)) {
      for (ModuleKey key : adapter.modules().keySet()) {
        String name = key.path() + ".weight";
        TensorData tensor = file.tensor(name);
        ByteBuffer copy = ByteBuffer.allocateDirect(Math.toIntExact(tensor.byteSize())).order(ByteOrder.nativeOrder());
        copy.put(tensor.bytes().duplicate()).flip();
        weights.put(name, manager.create(copy, new Shape(tensor.shape()), DataType.FLOAT16));
      }
    }
    return weights;
  }
}

package dev.loramerge.examples;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.loramerge.DType;
import dev.loramerge.LoraAdapter;
import dev.loramerge.TensorData;
import dev.loramerge.TensorSpec;
import dev.loramerge.algorithms.Dare;
import dev.loramerge.fuse.FusedLora;
import dev.loramerge.fuse.LoraFuser;
import dev.loramerge.fuse.WeightTarget;
import dev.loramerge.io.LoraFiles;
import dev.loramerge.io.SafetensorsFile;
import dev.loramerge.merge.LoraMerger;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;

/**
 * What an image-generation backend does per request: fuse the request's LoRAs into the UNet it
 * holds in memory, render, take them out again, and serve the next request with the weights it
 * started with, bit for bit, however many requests come.
 *
 * <pre>
 * java dev.loramerge.examples.HotSwap BASE.safetensors KOHYA.safetensors PEFT_FOLDER [CYCLES]
 * </pre>
 *
 * <p>The render is a stand-in: one transformer block of the UNet (self-attention and the GEGLU
 * feed-forward) applied to a fixed input, which is enough to see the LoRAs change the output and
 * the unfuse change it back.
 */
public final class HotSwap {
  private static final String BLOCK = "mid_block.attentions.0.transformer_blocks.0.";
  private static final int TOKENS = 16;

  private HotSwap() {}

  /** What a run of {@code cycles} hot swaps saw. */
  public record Outcome(int cycles, int weights, int weightsChanged, boolean loraChangedTheRender, boolean renderRestored) {
    /** Whether every weight and the render came back exactly, and the LoRAs did something. */
    public boolean restored() {
      return weightsChanged == 0 && renderRestored && loraChangedTheRender;
    }
  }

  public static void main(String[] args) throws IOException {
    if (args.length < 3 || args.length > 4) {
      System.err.println("usage: HotSwap BASE.safetensors KOHYA.safetensors PEFT_FOLDER [CYCLES]");
      System.exit(2);
    }
    int cycles = args.length == 4 ? Integer.parseInt(args[3]) : 100;
    Outcome outcome = run(Path.of(args[0]), Path.of(args[1]), Path.of(args[2]), cycles);
    System.out.printf(
        "%d fuse/render/unfuse cycles over %d weights: %d weights differ from the original, the LoRAs %s the render, the render %s%n",
        outcome.cycles(),
        outcome.weights(),
        outcome.weightsChanged(),
        outcome.loraChangedTheRender() ? "changed" : "did not change",
        outcome.renderRestored() ? "came back exactly" : "did not come back");
    System.exit(outcome.restored() ? 0 : 1);
  }

  /** Loads {@code base}, then fuses, renders and unfuses the two adapters {@code cycles} times. */
  public static Outcome run(Path base, Path kohya, Path peft, int cycles) throws IOException {
    LoraAdapter style = LoraFiles.read(kohya);
    LoraAdapter subject = LoraFiles.read(peft);
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      Map<String, NDArray> weights = load(manager, base);
      Map<String, ByteBuffer> originals = new LinkedHashMap<>();
      weights.forEach((name, array) -> originals.put(name, array.toByteBuffer()));
      WeightTarget unet = WeightTarget.of(weights);
      float[] input = input();
      float[] baseRender = render(manager, weights, input);
      boolean changed = false;
      LoraMerger request = LoraMerger.builder().add(style, 0.7).add(subject, 0.5).algorithm(Dare.of(0.3)).build();
      for (int cycle = 0; cycle < cycles; cycle++) {
        FusedLora fused = LoraFuser.of(request).fuseInto(unet);
        changed |= !Arrays.equals(render(manager, weights, input), baseRender);
        fused.unfuse();
      }
      int differing = 0;
      for (Map.Entry<String, NDArray> weight : weights.entrySet()) {
        if (!weight.getValue().toByteBuffer().equals(originals.get(weight.getKey()))) {
          differing++;
        }
      }
      boolean renderRestored = Arrays.equals(render(manager, weights, input), baseRender);
      unet.trim();
      return new Outcome(cycles, weights.size(), differing, changed, renderRestored);
    }
  }

  /**
   * The floating-point tensors of a safetensors file as NDArrays of {@code manager}. Each is
   * copied into memory of its own: an NDArray made straight from the file's read-only mapping
   * would share it, and the fuse writes into the arrays.
   */
  static Map<String, NDArray> load(NDManager manager, Path file) throws IOException {
    Map<String, NDArray> weights = new LinkedHashMap<>();
    try (SafetensorsFile safetensors = SafetensorsFile.open(file)) {
      for (TensorSpec info : safetensors.tensors()) {
        DataType type = dataType(info.dtype());
        if (type == DataType.UNKNOWN) {
          continue;
        }
        TensorData tensor = safetensors.tensor(info.name());
        ByteBuffer copy = ByteBuffer.allocateDirect(Math.toIntExact(tensor.byteSize())).order(ByteOrder.nativeOrder());
        copy.put(tensor.bytes()).flip();
        weights.put(info.name(), manager.create(copy, new Shape(tensor.shape()), type));
      }
    }
    return weights;
  }

  private static DataType dataType(DType dtype) {
    switch (dtype) {
      case F16:
        return DataType.FLOAT16;
      case F32:
        return DataType.FLOAT32;
      case F64:
        return DataType.FLOAT64;
      default:
        return DataType.UNKNOWN;
    }
  }

  private static float[] input() {
    Random random = new Random(7);
    float[] values = new float[TOKENS * 64];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) random.nextGaussian();
    }
    return values;
  }

  /** Self-attention, then the GEGLU feed-forward, each with its residual, in float32. */
  static float[] render(NDManager parent, Map<String, NDArray> weights, float[] input) {
    try (NDManager manager = parent.newSubManager()) {
      NDArray x = manager.create(input, new Shape(TOKENS, 64));
      NDArray q = linear(manager, weights, "attn1.to_q", x);
      NDArray k = linear(manager, weights, "attn1.to_k", x);
      NDArray v = linear(manager, weights, "attn1.to_v", x);
      NDArray attention = q.matMul(k.transpose()).div(Math.sqrt(64)).softmax(-1);
      x = x.add(linear(manager, weights, "attn1.to_out.0", attention.matMul(v)));
      NDArray projected = linear(manager, weights, "ff.net.0.proj", x);
      NDList halves = projected.split(2, 1);
      NDArray gated = halves.get(0).mul(geluTanh(halves.get(1)));
      x = x.add(linear(manager, weights, "ff.net.2", gated));
      return x.toFloatArray();
    }
  }

  private static NDArray linear(NDManager manager, Map<String, NDArray> weights, String layer, NDArray x) {
    NDArray y = x.matMul(float32(manager, weights.get(BLOCK + layer + ".weight")).transpose());
    NDArray bias = weights.get(BLOCK + layer + ".bias");
    return bias == null ? y : y.add(float32(manager, bias));
  }

  /** A float32 copy of a weight, freed with {@code manager} rather than with the weights. */
  private static NDArray float32(NDManager manager, NDArray weight) {
    NDArray copy = weight.toType(DataType.FLOAT32, true);
    copy.attach(manager);
    return copy;
  }

  private static NDArray geluTanh(NDArray x) {
    NDArray inner = x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI)).tanh();
    return x.mul(0.5).mul(inner.add(1));
  }
}

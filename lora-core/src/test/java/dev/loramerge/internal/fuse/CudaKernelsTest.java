package dev.loramerge.internal.fuse;

import static org.assertj.core.api.Assertions.assertThat;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What can be checked without a GPU: the kernels are off unless their library is named, and the
 * addresses handed to them are those of the arrays' own memory (on the CPU, where a buffer over it
 * can be read). The kernel's bytes are compared with the CPU's on a GPU by {@code bin/lora-bench
 * check} and {@code bin/lora-bench device} (gpu/device-run.sh).
 */
class CudaKernelsTest {
  @Test
  void isOffWithoutItsLibrary() {
    assertThat(System.getProperty(CudaKernels.LIBRARY_PROPERTY)).as("the test JVM names no kernel library").isNull();
    assertThat(CudaKernels.available(Device.gpu())).as("kernels available without their library").isFalse();
  }

  /** Every native method has its JNI function in the kernels' source, by JNI's naming rule. */
  @Test
  void theKernelSourceDefinesEveryNativeMethod() throws java.io.IOException {
    String source = java.nio.file.Files.readString(java.nio.file.Path.of("../gpu/kernels/loramerge_cuda.cu"));
    List<String> natives = java.util.Arrays.stream(CudaKernels.class.getDeclaredMethods())
        .filter(method -> java.lang.reflect.Modifier.isNative(method.getModifiers()))
        .map(java.lang.reflect.Method::getName)
        .toList();
    assertThat(natives).as("native methods").isNotEmpty();
    for (String name : natives) {
      assertThat(source).as("JNI function of %s", name).contains("Java_dev_loramerge_internal_fuse_CudaKernels_" + name + "(");
    }
  }

  @Test
  void pointsAtTheArraysOwnMemory() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      float[] values = {1.5f, -2.25f, 3e-8f, 65504f, 0f, -0f};
      NDArray array = manager.create(values, new Shape(2, 3));
      ByteBuffer memory = CudaKernels.DevicePointers.of(array).orElseThrow().order(ByteOrder.nativeOrder());
      float[] seen = new float[values.length];
      memory.asFloatBuffer().get(seen);
      assertThat(seen).as("the values at the array's address").containsExactly(values);

      array.set(new ai.djl.ndarray.index.NDIndex("0, 1"), 7f);
      assertThat(memory.getFloat(Float.BYTES)).as("a change to the array, seen at its address").isEqualTo(7f);
    }
  }

  @Test
  void hasNoAddressForAViewThatIsNotContiguous() {
    try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
      NDArray array = manager.arange(0f, 12f, 1f, DataType.FLOAT32).reshape(3, 4);
      assertThat(CudaKernels.DevicePointers.of(array.transpose())).as("a transposed view").isEmpty();
      assertThat(CudaKernels.DevicePointers.all(List.of(array, array.transpose()))).as("a list with one").isEmpty();
      assertThat(CudaKernels.DevicePointers.all(List.of(array, array))).as("contiguous arrays").isPresent();
    }
  }
}

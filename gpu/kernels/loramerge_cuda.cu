// The fuse's last step in one pass on an NVIDIA GPU, for dev.loramerge.internal.fuse.CudaKernels:
// each element of a batch of weights becomes its float64 sum (the product up·down, already on the
// device, plus the weight's own value, widened exactly) rounded once to the weight's dtype.
// libtorch needs about a dozen element-wise passes for the same bytes, because its float64 →
// fp16/bf16 cast rounds twice, through float32.
//
// Pointers come from Java as direct ByteBuffers over device memory (DJL's torchDirectByteBuffer):
// this file has no libtorch headers and works on libtorch's default stream, the legacy one, so
// that it is ordered with DJL's operations on either side.
//
// Built by gpu/build-kernels.sh with nvcc, loaded when -Dloramerge.cuda.kernels names the file.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <jni.h>

#include <climits>
#include <cstdint>
#include <string>

namespace {

// Round to odd: truncate, and set the last bit when anything was cut off. A float32 rounded to
// odd from float64 and then to fp16 or bf16 to nearest even is the float64 value rounded to
// nearest even once, because float32 has at least two more bits than either.
__device__ __forceinline__ float roundToOdd(double x) {
  float truncated = __double2float_rz(x);
  return static_cast<double>(truncated) == x ? truncated : __int_as_float(__float_as_int(truncated) | 1);
}

struct F64 {
  using T = double;
  static __device__ __forceinline__ double widen(T v) { return v; }
  static __device__ __forceinline__ T narrow(double x) { return x; }
  static __device__ __forceinline__ bool finite(T v) { return isfinite(v); }
};

struct F32 {
  using T = float;
  static __device__ __forceinline__ double widen(T v) { return v; }
  static __device__ __forceinline__ T narrow(double x) { return __double2float_rn(x); }
  static __device__ __forceinline__ bool finite(T v) { return isfinite(v); }
};

struct F16 {
  using T = __half;
  static __device__ __forceinline__ double widen(T v) { return __half2float(v); }
  static __device__ __forceinline__ T narrow(double x) { return __float2half_rn(roundToOdd(x)); }
  static __device__ __forceinline__ bool finite(T v) { return isfinite(__half2float(v)); }
};

struct BF16 {
  using T = __nv_bfloat16;
  static __device__ __forceinline__ double widen(T v) { return __bfloat162float(v); }
  static __device__ __forceinline__ T narrow(double x) { return __float2bfloat16_rn(roundToOdd(x)); }
  static __device__ __forceinline__ bool finite(T v) { return isfinite(__bfloat162float(v)); }
};

// Weights of a launch, passed by value: no device allocation, no copy before the launch.
constexpr int kWeightsPerLaunch = 256;
struct Sources {
  const void* pointers[kWeightsPerLaunch];
};

__device__ unsigned long long firstNotFinite;

// Grid: y = the weight within the launch, x strides over its elements.
template <typename K>
__global__ void fuseRound(const double* __restrict__ product, Sources sources, typename K::T* __restrict__ out,
                          long long perWeight, long long firstWeight) {
  using T = typename K::T;
  const long long base = (firstWeight + blockIdx.y) * perWeight;
  const T* source = static_cast<const T*>(sources.pointers[blockIdx.y]);
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < perWeight;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    T rounded = K::narrow(product[base + k] + K::widen(source[k]));
    out[base + k] = rounded;
    if (!K::finite(rounded)) {
      atomicMin(&firstNotFinite, static_cast<unsigned long long>(base + k));
    }
  }
}

bool failed(JNIEnv* env, cudaError_t status, const char* what) {
  if (status == cudaSuccess) {
    return false;
  }
  std::string message = std::string(what) + ": " + cudaGetErrorString(status);
  env->ThrowNew(env->FindClass("java/lang/IllegalStateException"), message.c_str());
  return true;
}

void* address(JNIEnv* env, jobjectArray buffers, jsize index) {
  jobject buffer = env->GetObjectArrayElement(buffers, index);
  void* pointer = env->GetDirectBufferAddress(buffer);
  env->DeleteLocalRef(buffer);
  return pointer;
}

template <typename K>
bool launch(JNIEnv* env, const double* product, jobjectArray sources, void* out, long long perWeight, jsize weights) {
  constexpr int kThreads = 256;
  long long blocks = (perWeight + kThreads - 1) / kThreads;
  unsigned int gridX = static_cast<unsigned int>(blocks < 2048 ? blocks : 2048);
  for (jsize first = 0; first < weights; first += kWeightsPerLaunch) {
    jsize count = weights - first < kWeightsPerLaunch ? weights - first : kWeightsPerLaunch;
    Sources chunk{};
    for (jsize j = 0; j < count; j++) {
      chunk.pointers[j] = address(env, sources, first + j);
    }
    fuseRound<K><<<dim3(gridX, count), kThreads, 0, cudaStreamLegacy>>>(
        product, chunk, static_cast<typename K::T*>(out), perWeight, first);
    if (failed(env, cudaGetLastError(), "loramerge fuseRound launch")) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" {

// out[j][k] = round(product[j][k] + sources[j][k]) for the weights j of a batch; returns -1 when
// every value is finite, else the flat index of the first that is not. dtype: 0 F64, 1 F32,
// 2 F16, 3 BF16. Runs on GPU `device` and waits for it.
JNIEXPORT jlong JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_fuseRound(
    JNIEnv* env, jclass, jint device, jobject product, jobjectArray sources, jobject out, jint dtype, jlong perWeight) {
  if (failed(env, cudaSetDevice(device), "loramerge fuseRound device")) {
    return 0;
  }
  const auto* products = static_cast<const double*>(env->GetDirectBufferAddress(product));
  void* rounded = env->GetDirectBufferAddress(out);
  jsize weights = env->GetArrayLength(sources);
  // libtorch's work on its stream (the product, the sources' copies) is done before the kernel
  // reads it, whichever stream libtorch was told to use.
  if (failed(env, cudaDeviceSynchronize(), "loramerge fuseRound wait")) {
    return 0;
  }
  unsigned long long none = ULLONG_MAX;
  if (failed(env, cudaMemcpyToSymbolAsync(firstNotFinite, &none, sizeof none, 0, cudaMemcpyHostToDevice, cudaStreamLegacy),
             "loramerge fuseRound flag")) {
    return 0;
  }
  bool launched = false;
  switch (dtype) {
    case 0: launched = launch<F64>(env, products, sources, rounded, perWeight, weights); break;
    case 1: launched = launch<F32>(env, products, sources, rounded, perWeight, weights); break;
    case 2: launched = launch<F16>(env, products, sources, rounded, perWeight, weights); break;
    case 3: launched = launch<BF16>(env, products, sources, rounded, perWeight, weights); break;
    default:
      env->ThrowNew(env->FindClass("java/lang/IllegalArgumentException"), "loramerge fuseRound: unknown dtype code");
      return 0;
  }
  if (!launched) {
    return 0;
  }
  unsigned long long first = 0;
  if (failed(env, cudaMemcpyFromSymbolAsync(&first, firstNotFinite, sizeof first, 0, cudaMemcpyDeviceToHost, cudaStreamLegacy),
             "loramerge fuseRound result") ||
      failed(env, cudaStreamSynchronize(cudaStreamLegacy), "loramerge fuseRound")) {
    return 0;
  }
  return first == ULLONG_MAX ? -1 : static_cast<jlong>(first);
}

// Copies weight j's bytes of `from` (bytesPerWeight each, one after the other) into weights[j],
// and waits for the copies.
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_scatter(
    JNIEnv* env, jclass, jint device, jobject from, jobjectArray weights, jlong bytesPerWeight) {
  if (failed(env, cudaSetDevice(device), "loramerge scatter device")) {
    return;
  }
  const auto* values = static_cast<const char*>(env->GetDirectBufferAddress(from));
  jsize count = env->GetArrayLength(weights);
  for (jsize j = 0; j < count; j++) {
    cudaError_t status = cudaMemcpyAsync(address(env, weights, j), values + j * bytesPerWeight, bytesPerWeight,
                                         cudaMemcpyDeviceToDevice, cudaStreamLegacy);
    if (failed(env, status, "loramerge scatter")) {
      return;
    }
  }
  failed(env, cudaStreamSynchronize(cudaStreamLegacy), "loramerge scatter");
}

// Pins (page-locks) a direct buffer's host memory, so that copies from it to a GPU run at the
// bus's speed rather than through the driver's staging buffers; false where CUDA refuses.
JNIEXPORT jboolean JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_pin(JNIEnv* env, jclass, jobject buffer) {
  void* address = env->GetDirectBufferAddress(buffer);
  jlong bytes = env->GetDirectBufferCapacity(buffer);
  if (address == nullptr || bytes <= 0) {
    return JNI_FALSE;
  }
  if (cudaHostRegister(address, bytes, cudaHostRegisterPortable) != cudaSuccess) {
    cudaGetLastError();
    return JNI_FALSE;
  }
  return JNI_TRUE;
}

// Unpins what pin pinned, before the buffer's memory is freed; false where CUDA refuses.
JNIEXPORT jboolean JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_unpinned(JNIEnv* env, jclass, jobject buffer) {
  if (cudaHostUnregister(env->GetDirectBufferAddress(buffer)) != cudaSuccess) {
    cudaGetLastError();
    return JNI_FALSE;
  }
  return JNI_TRUE;
}

}  // extern "C"

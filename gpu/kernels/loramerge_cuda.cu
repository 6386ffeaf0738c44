// The fuse's arithmetic on an NVIDIA GPU, and the merges' task arithmetic (mergeTasks, at the end
// of the file), for dev.loramerge.internal.fuse.CudaKernels. fuseProduct
// computes each element of a batch of fp16/bf16 weights from the factors in one pass: the float64
// dot product of its row of up and its column of down, in the order the host's NarrowFusion
// computes it, plus the weight's own value, rounded once, so that the bytes equal the host's by
// construction. fuseRound does the last step only, from a float64 product libtorch computed (for
// float32 and float64 weights, whose host path multiplies with libtorch too). libtorch needs about
// a dozen element-wise passes for the same bytes, because its float64 → fp16/bf16 cast rounds
// twice, through float32.
//
// Pointers come from Java as direct ByteBuffers over device memory (DJL's torchDirectByteBuffer):
// this file has no libtorch headers and works on libtorch's default stream, the legacy one, so
// that it is ordered with DJL's operations on either side.
//
// queueTerms, the path of a fuse from its adapters' stored factors, does not wait for the device:
// a batch's copy, kernels and writes into the weights are queued, the host goes on to the next
// batch, and each batch's first non-finite value lands in a flag of its own that the host reads
// once, at the end. The writes into the weights are a kernel that reads those flags, so a batch
// with a non-finite value, and every batch after it, leaves its weights as they were.
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
  static __device__ __forceinline__ unsigned short bits(T v) { return __half_as_ushort(v); }
  static __device__ __forceinline__ bool isZero(T v) { return (bits(v) & 0x7FFF) == 0; }
  static __device__ __forceinline__ float widenFloat(T v) { return __half2float(v); }
  static __device__ __forceinline__ T narrowFloat(float x) { return __float2half_rn(x); }
};

struct BF16 {
  using T = __nv_bfloat16;
  static __device__ __forceinline__ double widen(T v) { return __bfloat162float(v); }
  static __device__ __forceinline__ T narrow(double x) { return __float2bfloat16_rn(roundToOdd(x)); }
  static __device__ __forceinline__ bool finite(T v) { return isfinite(__bfloat162float(v)); }
  static __device__ __forceinline__ unsigned short bits(T v) { return __bfloat16_as_ushort(v); }
  static __device__ __forceinline__ bool isZero(T v) { return (bits(v) & 0x7FFF) == 0; }
  static __device__ __forceinline__ float widenFloat(T v) { return __bfloat162float(v); }
  static __device__ __forceinline__ T narrowFloat(float x) { return __float2bfloat16_rn(x); }
};

// Weights of a launch, passed by value: no device allocation, no copy before the launch.
constexpr int kWeightsPerLaunch = 256;
struct Sources {
  const void* pointers[kWeightsPerLaunch];
};

// The first non-finite value of a synchronous batch (fuseRound, fuseProduct), which the class
// lock on the Java side keeps to one batch at a time; a queued batch has its own flag.
__device__ unsigned long long firstNotFinite;

// Grid: y = the weight within the launch, x strides over its elements.
template <typename K>
__global__ void fuseRound(const double* __restrict__ product, Sources sources, typename K::T* __restrict__ out,
                          long long perWeight, long long firstWeight, unsigned long long* notFinite) {
  using T = typename K::T;
  const long long base = (firstWeight + blockIdx.y) * perWeight;
  const T* source = static_cast<const T*>(sources.pointers[blockIdx.y]);
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < perWeight;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    T rounded = K::narrow(product[base + k] + K::widen(source[k]));
    out[base + k] = rounded;
    if (!K::finite(rounded)) {
      atomicMin(notFinite, static_cast<unsigned long long>(base + k));
    }
  }
}

// fuseProduct's tiling: a block of TX×TY threads computes a tile of TY·TM rows and TX·TN columns,
// each thread TM adjacent rows and TN adjacent columns, so that it reads its values of up and down
// from shared memory 16 bytes at a time and a warp writes whole runs of a row. The rank is taken KC
// at a time through shared memory, rank by rank (up transposed where it lies by row); each thread keeps its
// elements' four partial sums in registers.
template <int TX_, int TY_, int TM_, int TN_, int KC_>
struct Tiling {
  static constexpr int TX = TX_, TY = TY_, TM = TM_, TN = TN_, KC = KC_;
  static constexpr int kThreads = TX * TY;
  static constexpr int kRows = TY * TM;
  static constexpr int kColumns = TX * TN;
  static_assert(KC % 4 == 0, "a chunk keeps the partial sums' lanes where the host has them");
  static_assert(TM % 2 == 0 && TN % 2 == 0, "values are read from shared memory in pairs");
};
// 64×64 tiles read 8 bytes of float64 factors per element where 32×32 ones read 16, and the time
// goes to those reads more than to the arithmetic: on an H100 the SDXL fuse took 14.1 ms in the
// kernel bench against 19.1 for 16, 8, 4, 2, 32 (127 registers with up by rank, 167 by row, no
// spills), and the Java fuse 0.049 s against 0.062. Another is compiled in where a header
// pre-included by NVCC_FLAGS defines it (nvcc splits a -D value at its commas), as device-run.sh's
// `tilings` stage does to compare tilings in the Java stages:
// #define LORAMERGE_PRODUCT_TILING 16, 8, 4, 2, 32
#ifndef LORAMERGE_PRODUCT_TILING
#define LORAMERGE_PRODUCT_TILING 16, 8, 8, 4, 16
#endif
using ProductTiling = Tiling<LORAMERGE_PRODUCT_TILING>;

// Calls visit(i, j, index) for each of a thread's TM×TN elements that lies inside the rows×cols
// weight: element (i, j) of the thread's block, which starts at (firstRow, firstCol), at flat
// index row·cols + col.
template <typename P, typename Visit>
__device__ __forceinline__ void forEachOwnElement(int firstRow, int firstCol, int rows, int cols, Visit visit) {
#pragma unroll
  for (int i = 0; i < P::TM; i++) {
    const int row = firstRow + i;
#pragma unroll
    for (int j = 0; j < P::TN; j++) {
      const int col = firstCol + j;
      if (row < rows && col < cols) {
        visit(i, j, static_cast<long long>(row) * cols + col);
      }
    }
  }
}

// How a batch's float64 ups lie in device memory: by row, b×rows×rank, as libtorch makes them; or
// by rank, b×rank×rows, as placeTerm makes them, so that a tile of up is read into shared memory as
// down's is, each rank's rows side by side. By row, the transposing stores into shared memory meet
// in one bank (a warp's 32 values of a row are 32 rows of the tile apart).
enum class UpLayout { kByRow, kByRank };

// The host's update of one element, NarrowFusion.exactUpdate's order: four partial sums, product l
// going to sum l mod 4 for l below the rank rounded down to a multiple of 4 and to sum 0 after
// that, each product and each addition rounded (no fused multiply-add, which the host does not do),
// then (s0 + s1) + (s2 + s3). `term(l)` gives product l, rounded once; fuseProduct needs it
// only for the elements its float32 estimate leaves undecided.
template <typename Term>
__device__ __forceinline__ double exactUpdate(int rank, Term term) {
  double sums[4] = {0.0, 0.0, 0.0, 0.0};
  const int whole = rank & ~3;
  int l = 0;
  for (; l < whole; l += 4) {
#pragma unroll
    for (int lane = 0; lane < 4; lane++) {
      sums[lane] = __dadd_rn(sums[lane], term(l + lane));
    }
  }
  for (; l < rank; l++) {
    sums[0] = __dadd_rn(sums[0], term(l));
  }
  return __dadd_rn(__dadd_rn(sums[0], sums[1]), __dadd_rn(sums[2], sums[3]));
}

template <UpLayout L>
__device__ __forceinline__ double upAt(const double* __restrict__ ups, int rows, int rank, int row, int l) {
  return L == UpLayout::kByRank ? ups[static_cast<long long>(l) * rows + row] : ups[static_cast<long long>(row) * rank + l];
}

// Grid: x = column tiles, y = row tiles, z = the weight within the launch. up is laid out as L says
// and down is b×rank×cols, float64, row-major. Each element is the weight plus exactUpdate, rounded
// once, as on the host; but the float64 sum in the host's order is formed only where it matters.
// The kernel first forms the dot product in float32 from the factors rounded to float32, with fused
// multiply-adds in any order, and bounds its distance from the host's float64 sum:
//   |estimate − exact| ≤ γ·‖u‖₂·‖d‖₂ + rank·2⁻¹⁴⁷·(1 + ‖u‖₂ + ‖d‖₂),  γ = (rank + 4)·2⁻²⁴ / (1 − (rank + 4)·2⁻²⁴)
// (the float32 chain's and conversions' relative errors, at most rank + 2 roundings of 2⁻²⁴ each,
// and the host's float64 ones, far smaller, over Σ|u·d| ≤ ‖u‖₂‖d‖₂ (Cauchy–Schwarz); the second
// term the absolute error of float32's subnormals). The host's result, the weight plus its float64
// sum rounded to nearest then narrowed, is a non-decreasing function of that sum. The kernel takes
// the float32 values lo ≤ w + estimate − bound and hi ≥ w + estimate + bound (rounded downwards and
// upwards): the host's float64 value lies in [lo, hi], so where lo and hi narrow to the same finite
// nonzero value, that value is the host's, bit for bit, found with float32 arithmetic and two
// conversions. Elsewhere (a sum within the bound of a rounding boundary: about one fp16 element in
// a hundred with rank-32 updates, mostly small weights, fewer for bf16; zeros; values that are not
// finite) the element is computed by exactUpdate, from the tile's float64 factors in shared memory
// where the rank fits one chunk, else from global memory. A warp takes its undecided elements
// together, each thread its next one, so that it runs exactUpdate as often as its busiest thread
// needs it rather than once for each of a thread's elements that any thread needs. The row and
// column norms are summed from the float64 tiles, each once per block, rounded upwards.
template <typename K, typename P, UpLayout L>
__global__ void __launch_bounds__(P::kThreads) fuseProduct(
    const double* __restrict__ up, const double* __restrict__ down, Sources sources, typename K::T* __restrict__ out,
    int rows, int cols, int rank, int firstWeight, unsigned long long* notFinite) {
  using T = typename K::T;
  static_assert(P::TM * P::TN <= 32, "a thread's undecided elements are bits of a word");
  static_assert(P::kThreads % 32 == 0, "every warp is whole for __any_sync");
  __shared__ __align__(16) float upTile[P::KC][P::kRows];
  __shared__ __align__(16) float downTile[P::KC][P::kColumns];
  __shared__ __align__(16) double upExact[P::KC][P::kRows];
  __shared__ __align__(16) double downExact[P::KC][P::kColumns];
  __shared__ double squares[P::kRows + P::kColumns];
  __shared__ float norms[P::kRows + P::kColumns];
  const int tx = threadIdx.x % P::TX;
  const int ty = threadIdx.x / P::TX;
  const int weight = firstWeight + blockIdx.z;
  const int firstRow = blockIdx.y * P::kRows;
  const int firstCol = blockIdx.x * P::kColumns;
  const double* ups = up + static_cast<long long>(weight) * rows * rank;
  const double* downs = down + static_cast<long long>(weight) * rank * cols;
  const long long perWeight = static_cast<long long>(rows) * cols;
  const T* source = static_cast<const T*>(sources.pointers[blockIdx.z]);
  // The weight's values are asked for before the products, so that their latency is hidden by
  // the arithmetic rather than waited for after it.
  T prior[P::TM][P::TN]{};
  forEachOwnElement<P>(firstRow + ty * P::TM, firstCol + tx * P::TN, rows, cols,
                       [&](int i, int j, long long index) { prior[i][j] = source[index]; });
  // Each row's and column's sum of squares is only ever touched by the thread that owns it.
  for (int e = threadIdx.x; e < P::kRows + P::kColumns; e += P::kThreads) {
    squares[e] = 0.0;
  }
  float sums[P::TM][P::TN];
#pragma unroll
  for (int i = 0; i < P::TM; i++) {
#pragma unroll
    for (int j = 0; j < P::TN; j++) {
      sums[i][j] = 0.0f;
    }
  }
  for (int chunk = 0; chunk < rank; chunk += P::KC) {
    const int length = rank - chunk < P::KC ? rank - chunk : P::KC;
    if constexpr (L == UpLayout::kByRank) {
      for (int e = threadIdx.x; e < P::KC * P::kRows; e += P::kThreads) {
        const int l = e / P::kRows;
        const int r = e % P::kRows;
        const double value = firstRow + r < rows && l < length ? ups[static_cast<long long>(chunk + l) * rows + firstRow + r] : 0.0;
        upExact[l][r] = value;
        upTile[l][r] = __double2float_rn(value);
      }
    } else {
      for (int e = threadIdx.x; e < P::KC * P::kRows; e += P::kThreads) {
        const int r = e / P::KC;
        const int l = e % P::KC;
        const double value = firstRow + r < rows && l < length ? ups[static_cast<long long>(firstRow + r) * rank + chunk + l] : 0.0;
        upExact[l][r] = value;
        upTile[l][r] = __double2float_rn(value);
      }
    }
    for (int e = threadIdx.x; e < P::KC * P::kColumns; e += P::kThreads) {
      const int l = e / P::kColumns;
      const int c = e % P::kColumns;
      const double value = firstCol + c < cols && l < length ? downs[static_cast<long long>(chunk + l) * cols + firstCol + c] : 0.0;
      downExact[l][c] = value;
      downTile[l][c] = __double2float_rn(value);
    }
    __syncthreads();
    // Four chains, so that the loads overlap; padded ranks add 0.
    for (int e = threadIdx.x; e < P::kRows + P::kColumns; e += P::kThreads) {
      const bool isRow = e < P::kRows;
      double partial[4] = {0.0, 0.0, 0.0, 0.0};
#pragma unroll
      for (int l = 0; l < P::KC; l++) {
        const double value = isRow ? upExact[l][e] : downExact[l][e - P::kRows];
        partial[l % 4] = __fma_rn(value, value, partial[l % 4]);
      }
      squares[e] = __dadd_rn(squares[e], __dadd_rn(__dadd_rn(partial[0], partial[1]), __dadd_rn(partial[2], partial[3])));
    }
    // Padded ranks add 0·0: the estimate's order and signed zeros do not matter.
#pragma unroll
    for (int l = 0; l < P::KC; l++) {
      float a[P::TM];
      float b[P::TN];
#pragma unroll
      for (int i = 0; i < P::TM; i += 2) {
        const float2 pair = *reinterpret_cast<const float2*>(&upTile[l][ty * P::TM + i]);
        a[i] = pair.x;
        a[i + 1] = pair.y;
      }
#pragma unroll
      for (int j = 0; j < P::TN; j += 2) {
        const float2 pair = *reinterpret_cast<const float2*>(&downTile[l][tx * P::TN + j]);
        b[j] = pair.x;
        b[j + 1] = pair.y;
      }
#pragma unroll
      for (int i = 0; i < P::TM; i++) {
#pragma unroll
        for (int j = 0; j < P::TN; j++) {
          sums[i][j] = __fmaf_rn(a[i], b[j], sums[i][j]);
        }
      }
    }
    __syncthreads();
  }
  for (int e = threadIdx.x; e < P::kRows + P::kColumns; e += P::kThreads) {
    // At most rank + 4·(chunks) roundings of 2⁻⁵³ of growing positive sums: 2⁻³⁰ covers any rank
    // below 2²².
    norms[e] = __double2float_ru(__dsqrt_ru(__dmul_ru(squares[e], 1.0 + 0x1p-30)));
  }
  __syncthreads();
  const float terms = static_cast<float>(rank + 4);
  const float relative = __fmul_ru(terms, 0x1p-24f);
  const float gamma = __fdiv_ru(relative, __fsub_rd(1.0f, relative));
  const float subnormals = __fmul_ru(static_cast<float>(rank), 0x1p-147f);
  unsigned int undecided = 0;
  forEachOwnElement<P>(firstRow + ty * P::TM, firstCol + tx * P::TN, rows, cols, [&](int i, int j, long long index) {
    const float upNorm = norms[ty * P::TM + i];
    const float downNorm = norms[P::kRows + tx * P::TN + j];
    const float bound = __fadd_ru(__fmul_ru(gamma, __fmul_ru(upNorm, downNorm)), __fmul_ru(subnormals, __fadd_ru(1.0f, __fadd_ru(upNorm, downNorm))));
    const float w = K::widenFloat(prior[i][j]);
    const T below = K::narrowFloat(__fadd_rd(w, __fsub_rd(sums[i][j], bound)));
    const T above = K::narrowFloat(__fadd_ru(w, __fadd_ru(sums[i][j], bound)));
    if (K::bits(below) != K::bits(above) || !K::finite(below) || K::isZero(below)) {
      undecided |= 1u << (i * P::TN + j);
    } else {
      out[weight * perWeight + index] = below;
    }
  });
  const bool fromTiles = rank <= P::KC;
  while (__any_sync(0xFFFFFFFFu, undecided != 0)) {
    if (undecided != 0) {
      const int element = __ffs(undecided) - 1;
      undecided &= undecided - 1;
      const int r = ty * P::TM + element / P::TN;
      const int c = tx * P::TN + element % P::TN;
      const long long index = static_cast<long long>(firstRow + r) * cols + firstCol + c;
      const double update =
          fromTiles ? exactUpdate(rank, [&](int l) { return __dmul_rn(upExact[l][r], downExact[l][c]); })
                    : exactUpdate(rank, [&](int l) {
                        return __dmul_rn(upAt<L>(ups, rows, rank, firstRow + r, l), downs[static_cast<long long>(l) * cols + firstCol + c]);
                      });
      const T rounded = K::narrow(__dadd_rn(K::widen(source[index]), update));
      out[weight * perWeight + index] = rounded;
      if (!K::finite(rounded)) {
        atomicMin(notFinite, static_cast<unsigned long long>(weight * perWeight + index));
      }
    }
  }
}

// A stored factor's value widened to float64 (exact): dtype 0 F64, 1 F32, 2 F16, 3 BF16.
__device__ __forceinline__ double widenStored(const void* values, int dtype, long long index) {
  switch (dtype) {
    case 0: return static_cast<const double*>(values)[index];
    case 1: return static_cast<const float*>(values)[index];
    case 2: return __half2float(static_cast<const __half*>(values)[index]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(values)[index]);
  }
}

// One term's stored factors of a batch of `count` weights placed into the batch's float64 factors
// as DeviceFusion.termsOnDevice forms them with libtorch: the up (count×rows×rank) widened, times
// the job's coefficient, then times `factor` unless it is 1 (each product rounded once), into
// ranks [offset, offset + rank) of ups, laid out by rank (count×total×rows); the down
// (count×rank×cols) widened into rows [offset, offset + rank) of downs (count×total×cols). Values
// are taken in the order they are written, so that a warp's writes are contiguous.
__global__ void placeTerm(const void* __restrict__ up, int upType, const void* __restrict__ down, int downType,
                          const double* __restrict__ coefficients, double factor, int count, int rows, int cols, int rank,
                          int offset, int total, double* __restrict__ ups, double* __restrict__ downs) {
  const long long upValues = static_cast<long long>(count) * rows * rank;
  const long long downValues = static_cast<long long>(count) * rank * cols;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < upValues + downValues; e += stride) {
    if (e < upValues) {
      const long long job = e / (static_cast<long long>(rows) * rank);
      const long long within = e % (static_cast<long long>(rows) * rank);
      const long long k = within / rows;
      const long long row = within % rows;
      double value = __dmul_rn(widenStored(up, upType, (job * rows + row) * rank + k), coefficients[job]);
      if (factor != 1.0) {
        value = __dmul_rn(value, factor);
      }
      ups[(job * total + offset + k) * rows + row] = value;
    } else {
      const long long d = e - upValues;
      const long long job = d / (static_cast<long long>(rank) * cols);
      const long long within = d % (static_cast<long long>(rank) * cols);
      const long long k = within / cols;
      const long long col = within % cols;
      downs[(job * total + offset + k) * cols + col] = widenStored(down, downType, d);
    }
  }
}

// Flags of a queued fuse, one array in device memory: flags[0] is the first batch found with a
// value that is not finite, flags[1 + b] batch b's first such flat index; ULLONG_MAX is none.
// Weights of a launch to write, as Sources are weights to read.
struct Targets {
  void* pointers[kWeightsPerLaunch];
};

// Grid: y = the weight within the launch, x strides over its bytes. Copies weight j's rounded
// values (bytesPerWeight each, one weight after the other from `from`) into it, unless batch
// `batch` or an earlier one had a value that is not finite: then the weights stay as they were,
// and the batch is recorded as failed for the batches after it.
__global__ void scatterIfFinite(const char* __restrict__ from, Targets weights, long long bytesPerWeight, int firstWeight,
                                unsigned long long* flags, int batch) {
  if (flags[1 + batch] != ULLONG_MAX) {
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
      atomicMin(&flags[0], static_cast<unsigned long long>(batch));
    }
    return;
  }
  if (flags[0] != ULLONG_MAX) {
    return;
  }
  const char* values = from + (firstWeight + static_cast<long long>(blockIdx.y)) * bytesPerWeight;
  char* weight = static_cast<char*>(weights.pointers[blockIdx.y]);
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  const long long first = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if ((reinterpret_cast<uintptr_t>(values) | reinterpret_cast<uintptr_t>(weight) | bytesPerWeight) % sizeof(int4) == 0) {
    const long long chunks = bytesPerWeight / static_cast<long long>(sizeof(int4));
    for (long long k = first; k < chunks; k += stride) {
      reinterpret_cast<int4*>(weight)[k] = reinterpret_cast<const int4*>(values)[k];
    }
  } else {
    for (long long k = first; k < bytesPerWeight; k += stride) {
      weight[k] = values[k];
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

// The addresses of buffers[first, first + count), for one launch (count at most kWeightsPerLaunch).
template <typename Pointers>
Pointers pointersOf(JNIEnv* env, jobjectArray buffers, jsize first, jsize count) {
  Pointers chunk{};
  for (jsize j = 0; j < count; j++) {
    chunk.pointers[j] = address(env, buffers, first + j);
  }
  return chunk;
}

template <typename K>
bool launch(JNIEnv* env, const double* product, jobjectArray sources, void* out, long long perWeight, jsize weights,
            unsigned long long* notFinite) {
  constexpr int kThreads = 256;
  long long blocks = (perWeight + kThreads - 1) / kThreads;
  unsigned int gridX = static_cast<unsigned int>(blocks < 2048 ? blocks : 2048);
  for (jsize first = 0; first < weights; first += kWeightsPerLaunch) {
    jsize count = weights - first < kWeightsPerLaunch ? weights - first : kWeightsPerLaunch;
    Sources chunk = pointersOf<Sources>(env, sources, first, count);
    fuseRound<K><<<dim3(gridX, count), kThreads, 0, cudaStreamLegacy>>>(
        product, chunk, static_cast<typename K::T*>(out), perWeight, first, notFinite);
    if (failed(env, cudaGetLastError(), "loramerge fuseRound launch")) {
      return false;
    }
  }
  return true;
}

template <typename K, UpLayout L, typename P = ProductTiling>
bool launchProduct(JNIEnv* env, const double* up, const double* down, jobjectArray sources, void* out, int rows, int cols,
                   int rank, jsize weights, unsigned long long* notFinite) {
  dim3 grid((cols + P::kColumns - 1) / P::kColumns, (rows + P::kRows - 1) / P::kRows, 1);
  for (jsize first = 0; first < weights; first += kWeightsPerLaunch) {
    jsize count = weights - first < kWeightsPerLaunch ? weights - first : kWeightsPerLaunch;
    Sources chunk = pointersOf<Sources>(env, sources, first, count);
    grid.z = count;
    fuseProduct<K, P, L><<<grid, P::kThreads, 0, cudaStreamLegacy>>>(up, down, chunk, static_cast<typename K::T*>(out), rows,
                                                                   cols, rank, first, notFinite);
    if (failed(env, cudaGetLastError(), "loramerge fuseProduct launch")) {
      return false;
    }
  }
  return true;
}

// Clears the not-finite flag before a synchronous batch's launches (after libtorch's queued work
// is done, so that the kernels read what it wrote) and gives its address; endBatch reads it after
// them: -1 when every value was finite.
unsigned long long* beginBatch(JNIEnv* env, jint device, const char* what) {
  if (failed(env, cudaSetDevice(device), what) || failed(env, cudaDeviceSynchronize(), what)) {
    return nullptr;
  }
  unsigned long long none = ULLONG_MAX;
  void* flag = nullptr;
  if (failed(env, cudaMemcpyToSymbolAsync(firstNotFinite, &none, sizeof none, 0, cudaMemcpyHostToDevice, cudaStreamLegacy),
             what) ||
      failed(env, cudaGetSymbolAddress(&flag, firstNotFinite), what)) {
    return nullptr;
  }
  return static_cast<unsigned long long*>(flag);
}

jlong endBatch(JNIEnv* env, const char* what) {
  unsigned long long first = 0;
  if (failed(env, cudaMemcpyFromSymbolAsync(&first, firstNotFinite, sizeof first, 0, cudaMemcpyDeviceToHost, cudaStreamLegacy),
             what) ||
      failed(env, cudaStreamSynchronize(cudaStreamLegacy), what)) {
    return 0;
  }
  return first == ULLONG_MAX ? -1 : static_cast<jlong>(first);
}

// Queues scatterIfFinite of the `count` weights of a batch, 256 weights a launch.
bool queueScatter(JNIEnv* env, const char* from, jobjectArray weights, long long bytesPerWeight, unsigned long long* flags,
                  jint batch) {
  jsize count = env->GetArrayLength(weights);
  constexpr int kThreads = 256;
  long long blocks = (bytesPerWeight / static_cast<long long>(sizeof(int4)) + kThreads - 1) / kThreads;
  unsigned int gridX = static_cast<unsigned int>(blocks < 1 ? 1 : blocks < 1024 ? blocks : 1024);
  for (jsize first = 0; first < count; first += kWeightsPerLaunch) {
    jsize launched = count - first < kWeightsPerLaunch ? count - first : kWeightsPerLaunch;
    Targets chunk = pointersOf<Targets>(env, weights, first, launched);
    scatterIfFinite<<<dim3(gridX, launched), kThreads, 0, cudaStreamLegacy>>>(from, chunk, bytesPerWeight, first, flags, batch);
    if (failed(env, cudaGetLastError(), "loramerge scatterIfFinite launch")) {
      return false;
    }
  }
  return true;
}


// ---- Merges: the task arithmetic of a run of same-shape modules (CudaKernels.mergeTasks) ----
//
// Each input of each module is a slot: its update s·B·A (the host's LowRankProducts: float32
// fused multiply-adds in increasing rank from +0, then times s), pruned and combined as
// TaskArithmetic says, with the bits of the method's merge on the host. The magnitude cut keeps
// what MagnitudeSelect keeps: the k-th largest magnitude is found by a radix select on the
// magnitudes' bits (11, 10 and 10 bits, each level a histogram in shared memory), entries above it
// are kept, and of those equal to it the first in order, up to k; NaN is never kept.

// One slot, as DeviceTasks writes it (native order, 40 bytes).
struct TaskSlot {
  long long up;  // B's first float in the factors; A (rank×cols) follows B (rows×rank)
  double weight;
  unsigned long long seed;  // the random pruning's stream
  int rank;
  float scale;
  int member;
  int unused;
};
static_assert(sizeof(TaskSlot) == 40, "DeviceTasks writes slots of 40 bytes");

// A slot's magnitude select: mode 0 cuts at `threshold` (ties kept below index tieLimit), 1 keeps
// everything, 2 nothing, 3 cuts but has the index of tie number `remaining` still to find.
struct SelectState {
  long long remaining;
  long long above;
  unsigned long long nans;
  long long tieLimit;
  int prefix;
  int mode;
  int threshold;
  int unused[5];
};
static_assert(sizeof(SelectState) == 64, "work layout");

constexpr int kSelectBins = 2048;
constexpr int kTieChunk = 4096;
constexpr int kProductRows = 8;
constexpr unsigned int kInfinityBits = 0x7f800000u;

long long tieChunks(long long perSlot) { return (perSlot + kTieChunk - 1) / kTieChunk; }

// Bytes of device work memory for `slots` slots of `perSlot` elements: two selects' states (the
// outliers' after the kept entries'), histograms, tie counts per chunk.
long long taskWorkBytes(long long slots, long long perSlot) {
  return slots * (2 * static_cast<long long>(sizeof(SelectState)) + kSelectBins * 4LL + tieChunks(perSlot) * 4LL);
}

// Grid: x over columns, y over groups of kProductRows rows, z the slot. The thread's rows share
// each value of A it loads; B's values are the same for the whole block and come from the cache.
__global__ void lowRankProducts(const float* __restrict__ factors, const TaskSlot* __restrict__ slots, int rows, int cols,
                                float* __restrict__ deltas) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  const int firstRow = blockIdx.y * kProductRows;
  if (col >= cols) {
    return;
  }
  const TaskSlot slot = slots[blockIdx.z];
  const float* up = factors + slot.up;
  const float* down = up + static_cast<long long>(rows) * slot.rank;
  const int count = rows - firstRow < kProductRows ? rows - firstRow : kProductRows;
  float sums[kProductRows];
#pragma unroll
  for (int i = 0; i < kProductRows; i++) {
    sums[i] = 0.0f;
  }
  for (int k = 0; k < slot.rank; k++) {
    const float a = __ldg(down + static_cast<long long>(k) * cols + col);
#pragma unroll
    for (int i = 0; i < kProductRows; i++) {
      if (i < count) {
        sums[i] = __fmaf_rn(__ldg(up + static_cast<long long>(firstRow + i) * slot.rank + k), a, sums[i]);
      }
    }
  }
  float* out = deltas + static_cast<long long>(blockIdx.z) * rows * cols + static_cast<long long>(firstRow) * cols + col;
#pragma unroll
  for (int i = 0; i < kProductRows; i++) {
    if (i < count) {
      out[static_cast<long long>(i) * cols] = __fmul_rn(sums[i], slot.scale);
    }
  }
}

__global__ void startSelect(SelectState* states, int slots, long long keep, long long perSlot) {
  const int slot = blockIdx.x * blockDim.x + threadIdx.x;
  if (slot < slots) {
    SelectState state{};
    state.remaining = keep;
    state.tieLimit = perSlot;
    state.mode = keep >= perSlot ? 1 : keep <= 0 ? 2 : 0;
    states[slot] = state;
  }
}

__device__ __forceinline__ unsigned int magnitudeBits(float value) { return __float_as_uint(value) & 0x7fffffffu; }

// Level 0 counts bits 30..20 of every magnitude (and the NaNs); levels 1 and 2 count bits 19..10
// and 9..0 of the magnitudes whose higher bits are the prefix chosen so far. Grid: x strides over
// the slot's elements, y is the slot.
__global__ void magnitudeHistogram(const float* __restrict__ deltas, long long perSlot, SelectState* states,
                                   unsigned int* histograms, int level) {
  __shared__ unsigned int bins[kSelectBins];
  __shared__ unsigned long long nans;
  const int slot = blockIdx.y;
  if (states[slot].mode != 0) {
    return;
  }
  for (int b = threadIdx.x; b < kSelectBins; b += blockDim.x) {
    bins[b] = 0;
  }
  if (threadIdx.x == 0) {
    nans = 0;
  }
  __syncthreads();
  const unsigned int prefix = static_cast<unsigned int>(states[slot].prefix);
  const float* values = deltas + slot * perSlot;
  unsigned int ownNans = 0;
  // Whole warps go round together, so that level 0 can count a warp's equal buckets with one atomic.
  for (long long base = blockIdx.x * static_cast<long long>(blockDim.x); base < perSlot;
       base += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long i = base + threadIdx.x;
    const bool valid = i < perSlot;
    const unsigned int magnitude = valid ? magnitudeBits(values[i]) : 0;
    if (level == 0) {
      // Most of a delta's magnitudes fall in a few buckets: one atomic per bucket per warp.
      const unsigned int bucket = valid ? magnitude >> 20 : 0xffffffffu;
      const unsigned int peers = __match_any_sync(0xffffffffu, bucket);
      if (valid && (threadIdx.x & 31) == __ffs(peers) - 1) {
        atomicAdd(&bins[bucket], static_cast<unsigned int>(__popc(peers)));
      }
      ownNans += valid && magnitude > kInfinityBits;
    } else if (valid && (level == 1 ? (magnitude >> 20) == prefix : (magnitude >> 10) == prefix)) {
      atomicAdd(&bins[(magnitude >> (level == 1 ? 10 : 0)) & 0x3ffu], 1u);
    }
  }
  if (ownNans != 0) {
    atomicAdd(&nans, static_cast<unsigned long long>(ownNans));
  }
  __syncthreads();
  unsigned int* histogram = histograms + static_cast<long long>(slot) * kSelectBins;
  for (int b = threadIdx.x; b < kSelectBins; b += blockDim.x) {
    if (bins[b] != 0) {
      atomicAdd(&histogram[b], bins[b]);
    }
  }
  if (threadIdx.x == 0 && nans != 0) {
    atomicAdd(&states[slot].nans, nans);
  }
}

// One thread per slot: the bucket of the level that holds the k-th largest magnitude. After the
// last level the threshold is known; ties at it are all kept when they fit, else tie number
// (k − entries above it that are not NaN) is the first dropped, which findTie locates.
__global__ void chooseBucket(SelectState* states, const unsigned int* histograms, int slots, int level) {
  const int slot = blockIdx.x * blockDim.x + threadIdx.x;
  if (slot >= slots || states[slot].mode != 0) {
    return;
  }
  SelectState& state = states[slot];
  const unsigned int* histogram = histograms + static_cast<long long>(slot) * kSelectBins;
  long long remaining = state.remaining;
  int bucket = (level == 0 ? kSelectBins : kSelectBins / 2) - 1;
  while (histogram[bucket] < remaining) {
    remaining -= histogram[bucket];
    state.above += histogram[bucket];
    bucket--;
  }
  state.prefix = level == 0 ? bucket : (state.prefix << 10) | bucket;
  state.remaining = remaining;
  if (level < 2) {
    return;
  }
  const unsigned int threshold = static_cast<unsigned int>(state.prefix);
  state.threshold = static_cast<int>(threshold);
  if (threshold > kInfinityBits) {
    state.mode = 2;
    return;
  }
  // Every NaN lies above a threshold that is not NaN, and is not kept: its place goes to a tie.
  const long long allowed = remaining + static_cast<long long>(state.nans);
  if (allowed < histogram[bucket]) {
    state.remaining = allowed;
    state.mode = 3;
  }
}

// Grid: x the chunk of kTieChunk elements, y the slot: each chunk's count of magnitudes equal to
// the threshold, for slots that must drop some of them.
__global__ void countTies(const float* __restrict__ deltas, long long perSlot, const SelectState* states,
                          unsigned int* chunkTies, long long chunks) {
  __shared__ unsigned int count;
  const int slot = blockIdx.y;
  if (states[slot].mode != 3) {
    return;
  }
  if (threadIdx.x == 0) {
    count = 0;
  }
  __syncthreads();
  const unsigned int threshold = static_cast<unsigned int>(states[slot].threshold);
  const long long start = static_cast<long long>(blockIdx.x) * kTieChunk;
  const long long end = start + kTieChunk < perSlot ? start + kTieChunk : perSlot;
  unsigned int own = 0;
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
    own += magnitudeBits(deltas[slot * perSlot + i]) == threshold;
  }
  if (own != 0) {
    atomicAdd(&count, own);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    chunkTies[slot * chunks + blockIdx.x] = count;
  }
}

// One warp per slot: the index of tie number `remaining` (from 0), in order, which becomes the
// slot's tie limit.
__global__ void findTie(const float* __restrict__ deltas, long long perSlot, SelectState* states,
                        const unsigned int* chunkTies, long long chunks) {
  const int slot = blockIdx.x;
  SelectState& state = states[slot];
  if (state.mode != 3) {
    return;
  }
  long long wanted = state.remaining;
  long long chunk = 0;
  while (chunk < chunks - 1 && chunkTies[slot * chunks + chunk] <= wanted) {
    wanted -= chunkTies[slot * chunks + chunk];
    chunk++;
  }
  const unsigned int threshold = static_cast<unsigned int>(state.threshold);
  const long long end = (chunk + 1) * kTieChunk < perSlot ? (chunk + 1) * kTieChunk : perSlot;
  for (long long base = chunk * kTieChunk; base < end; base += 32) {
    const long long i = base + threadIdx.x;
    const bool tie = i < end && magnitudeBits(deltas[slot * perSlot + i]) == threshold;
    unsigned int ties = __ballot_sync(0xffffffffu, tie);
    const int found = __popc(ties);
    if (wanted < found) {
      for (long long skip = 0; skip < wanted; skip++) {
        ties &= ties - 1;
      }
      if (threadIdx.x == 0) {
        state.tieLimit = base + __ffs(ties) - 1;
        state.mode = 0;
      }
      return;
    }
    wanted -= found;
  }
}

__device__ __forceinline__ unsigned long long splitMix(unsigned long long seed, unsigned long long n) {
  unsigned long long z = seed + n * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Java's Math.signum(float): ±1, or the value itself for ±0 and NaN.
__device__ __forceinline__ float signum(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; }

// DELLA's keep probability of rank `rank` (0 the smallest magnitude) in a row of `cols`, as the
// host's TaskTensors.pruneDella forms it: (density − epsilon) + (2·epsilon·rank)/(cols − 1), each
// step rounded, clamped to [0, 1].
__device__ __forceinline__ double rankProbability(int rank, int cols, double density, double epsilon) {
  const double p = cols == 1 ? density
                             : __dadd_rn(__dsub_rn(density, epsilon),
                                         __ddiv_rn(__dmul_rn(__dmul_rn(2.0, epsilon), static_cast<double>(rank)),
                                                   static_cast<double>(cols - 1)));
  return fmin(1.0, fmax(0.0, p));
}

constexpr int kRankThreads = 512;

// Prune 4 (DELLA's MagPrune), in place. Grid: x the row, y the slot; `width` the power of two at or
// above cols, its keys in dynamic shared memory. The row's keys (magnitude bits above the column,
// as the host sorts them) are bitonic-sorted; rank r's entry is kept where its probability p > 0
// and the slot's stream's draw for it is below p, and divided by p. The host draws only where
// p > 0, in increasing rank, row after row, and p rises with the rank, so a row makes cols − z
// draws, z its ranks of probability 0, and rank r's is draw number row·(cols − z) + r − z + 1.
__global__ void __launch_bounds__(kRankThreads) rankedPrune(float* __restrict__ deltas, const TaskSlot* __restrict__ slots,
                                                            int rows, int cols, int width, double density, double epsilon) {
  extern __shared__ unsigned long long keys[];
  float* values = deltas + (static_cast<long long>(blockIdx.y) * rows + blockIdx.x) * cols;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    keys[i] = i < cols ? static_cast<unsigned long long>(magnitudeBits(values[i])) << 32 | static_cast<unsigned int>(i) : ~0ull;
  }
  __syncthreads();
  for (int size = 2; size <= width; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const int partner = i ^ stride;
        if (partner > i) {
          const unsigned long long a = keys[i];
          const unsigned long long b = keys[partner];
          if ((a > b) == ((i & size) == 0)) {
            keys[i] = b;
            keys[partner] = a;
          }
        }
      }
      __syncthreads();
    }
  }
  int zero = 0;
  while (zero < cols && rankProbability(zero, cols, density, epsilon) <= 0.0) {
    zero++;
  }
  const unsigned long long seed = slots[blockIdx.y].seed;
  const unsigned long long drawsBefore = static_cast<unsigned long long>(blockIdx.x) * (cols - zero);
  for (int rank = threadIdx.x; rank < cols; rank += blockDim.x) {
    const int col = static_cast<int>(keys[rank] & 0xffffffffull);
    const double p = rankProbability(rank, cols, density, epsilon);
    float kept = 0.0f;
    if (p > 0.0 && static_cast<double>(splitMix(seed, drawsBefore + (rank - zero) + 1) >> 11) * 0x1p-53 < p) {
      kept = __double2float_rn(__ddiv_rn(static_cast<double>(values[col]), p));
    }
    values[col] = kept;
  }
}

// Whether a select keeps entry i, of value x.
__device__ __forceinline__ bool selected(const SelectState& state, float x, long long i) {
  if (state.mode != 0) {
    return state.mode == 1;
  }
  const unsigned int magnitude = magnitudeBits(x);
  const unsigned int threshold = static_cast<unsigned int>(state.threshold);
  return magnitude <= kInfinityBits && (magnitude > threshold || (magnitude == threshold && i < state.tieLimit));
}

// Slot t's entry i after pruning: prune 0 none, 1 magnitude, 2 random, 3 outliers (the kept
// entries' select less the non-zero entries of the outliers' select, states[slots + t]); 4,
// rankedPrune's, is done in place before.
__device__ __forceinline__ float pruned(const float* deltas, long long perSlot, int t, long long i, int prune,
                                        const SelectState* states, const SelectState* outliers, const TaskSlot* slots,
                                        double density, unsigned long long randomThreshold) {
  const float x = deltas[t * perSlot + i];
  if (prune == 1) {
    return selected(states[t], x, i) ? x : 0.0f;
  }
  if (prune == 3) {
    return selected(states[t], x, i) && !(x != 0.0f && selected(outliers[t], x, i)) ? x : 0.0f;
  }
  if (prune == 2) {
    const bool kept = (splitMix(slots[t].seed, static_cast<unsigned long long>(i) + 1) >> 11) < randomThreshold;
    return kept ? __double2float_rn(__ddiv_rn(static_cast<double>(x), density)) : 0.0f;
  }
  return x;
}

// Grid: x strides over the elements, y is the module. combine 0: Σ wₜ·xₜ; 1: TIES with the sign
// of Σ xₜ; 2: with the sign of Σ sign(xₜ). The host's additions in the host's order, in float64,
// rounded once; no multiply-add is contracted.
__global__ void combineTasks(const float* __restrict__ deltas, long long perSlot, const TaskSlot* __restrict__ slots,
                             const int* __restrict__ memberFirst, const SelectState* __restrict__ states,
                             const SelectState* __restrict__ outliers, int prune, double density,
                             unsigned long long randomThreshold, int combine, float* __restrict__ out) {
  const int member = blockIdx.y;
  const int first = memberFirst[member];
  const int last = memberFirst[member + 1];
  float* merged = out + static_cast<long long>(member) * perSlot;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < perSlot;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    if (combine == 0) {
      double total = 0.0;
      for (int t = first; t < last; t++) {
        const float x = pruned(deltas, perSlot, t, i, prune, states, outliers, slots, density, randomThreshold);
        total = __dadd_rn(total, __dmul_rn(slots[t].weight, static_cast<double>(x)));
      }
      merged[i] = __double2float_rn(total);
      continue;
    }
    double votes = 0.0;
    for (int t = first; t < last; t++) {
      const float x = pruned(deltas, perSlot, t, i, prune, states, outliers, slots, density, randomThreshold);
      votes = __dadd_rn(votes, static_cast<double>(combine == 1 ? x : signum(x)));
    }
    const float elected = votes >= 0.0 ? 1.0f : -1.0f;
    double total = 0.0;
    int agreeing = 0;
    for (int t = first; t < last; t++) {
      const float x = pruned(deltas, perSlot, t, i, prune, states, outliers, slots, density, randomThreshold);
      if (signum(x) == elected) {
        total = __dadd_rn(total, __dmul_rn(slots[t].weight, static_cast<double>(x)));
        agreeing++;
      }
    }
    merged[i] = __double2float_rn(__ddiv_rn(total, static_cast<double>(agreeing > 1 ? agreeing : 1)));
  }
}

unsigned int stridedBlocks(long long elements, long long most) {
  long long blocks = (elements + 255) / 256;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks < most ? blocks : most);
}

// Queues the magnitude select keeping `keep` entries of each slot into `states`.
bool queueSelect(JNIEnv* env, const float* updates, long long perSlot, int slots, long long keep, SelectState* states,
                 unsigned int* histograms, unsigned int* chunkTies) {
  const unsigned int slotBlocks = (slots + 127) / 128;
  const long long chunks = tieChunks(perSlot);
  startSelect<<<slotBlocks, 128, 0, cudaStreamLegacy>>>(states, slots, keep, perSlot);
  for (int level = 0; level < 3; level++) {
    if (failed(env, cudaMemsetAsync(histograms, 0, static_cast<size_t>(slots) * kSelectBins * 4, cudaStreamLegacy),
               "loramerge magnitude select")) {
      return false;
    }
    magnitudeHistogram<<<dim3(stridedBlocks(perSlot, 512), slots), 256, 0, cudaStreamLegacy>>>(updates, perSlot, states,
                                                                                             histograms, level);
    chooseBucket<<<slotBlocks, 128, 0, cudaStreamLegacy>>>(states, histograms, slots, level);
  }
  countTies<<<dim3(static_cast<unsigned int>(chunks), slots), 256, 0, cudaStreamLegacy>>>(updates, perSlot, states, chunkTies,
                                                                                       chunks);
  findTie<<<slots, 32, 0, cudaStreamLegacy>>>(updates, perSlot, states, chunkTies, chunks);
  return !failed(env, cudaGetLastError(), "loramerge magnitude select launch");
}

// ---- The randomized SVD's products in the host's order (CudaKernels.orderedProduct) ----
//
// C = A·B, or Aᵀ·B where A is stored inner×rows, for each matrix of a batch: every entry the fused
// multiply-adds of its inner products in increasing inner index from +0, as OrderedProducts
// computes it on the host, so that the bytes are the host's. Each entry's chain stays whole in one
// thread (splitting the inner dimension would reorder the sums), so the speed comes from the
// tiling: a block computes kRows×kCols entries, each thread kRowsEach×kColsEach of them from
// registers, the inner dimension kInner at a time through two shared-memory buffers (the next
// tile is read from global memory while the current one is multiplied: one barrier per tile).
// The chain never runs past `inner` (a padded 0·0 would turn a −0 sum into +0).
// kernels/ordered_product_bench.cu chose the tilings; OrderedTilings picks one per shape.
template <int kRows_, int kCols_, int kRowsEach_, int kColsEach_, int kInner_>
struct OrderedTiling {
  static constexpr int kRows = kRows_;
  static constexpr int kCols = kCols_;
  static constexpr int kRowsEach = kRowsEach_;
  static constexpr int kColsEach = kColsEach_;
  static constexpr int kInner = kInner_;
  static constexpr int kThreads = (kRows / kRowsEach) * (kCols / kColsEach);
  // Rows of A's tile padded so that a non-transposed A's stores (a column of the tile per warp)
  // fall in different banks.
  static constexpr int kPaddedRows = kRows + 4;
  static constexpr int kAEach = kRows * kInner / kThreads;
  static constexpr int kBEach = (kCols * kInner + kThreads - 1) / kThreads;
  static_assert(kRows % kRowsEach == 0 && kCols % kColsEach == 0 && kRows * kInner % kThreads == 0, "tiling");
};

__device__ __forceinline__ float orderedFma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double orderedFma(double a, double b, double c) { return __fma_rn(a, b, c); }

// Grid: x column tiles, y row tiles, z the batch; matrix z of A, B and C starts z times its stride
// (0: one matrix for the whole batch).
template <typename T, bool kTransposeA, typename P>
__global__ void __launch_bounds__(P::kThreads) orderedProduct(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c,
                                                              int rows, int inner, int cols, long long aStride, long long bStride,
                                                              long long cStride) {
  __shared__ T aTile[2][P::kInner][P::kPaddedRows];
  __shared__ T bTile[2][P::kInner][P::kCols];
  const int tx = threadIdx.x % (P::kCols / P::kColsEach);
  const int ty = threadIdx.x / (P::kCols / P::kColsEach);
  const int firstRow = blockIdx.y * P::kRows;
  const int firstCol = blockIdx.x * P::kCols;
  const T* as = a + blockIdx.z * aStride;
  const T* bs = b + blockIdx.z * bStride;
  T aNext[P::kAEach];
  T bNext[P::kBEach];
  // Element e of a tile: reads run along memory (along the rows of a transposed A, along the
  // inner index otherwise; along B's rows).
  auto aPlace = [](int e, int& l, int& r) {
    l = kTransposeA ? e / P::kRows : e % P::kInner;
    r = kTransposeA ? e % P::kRows : e / P::kInner;
  };
  auto fetch = [&](int start) {
    const int length = min(inner - start, P::kInner);
#pragma unroll
    for (int p = 0; p < P::kAEach; p++) {
      int l;
      int r;
      aPlace(threadIdx.x + p * P::kThreads, l, r);
      const int row = firstRow + r;
      aNext[p] = l < length && row < rows
                     ? (kTransposeA ? as[static_cast<long long>(start + l) * rows + row] : as[static_cast<long long>(row) * inner + start + l])
                     : T(0);
    }
#pragma unroll
    for (int p = 0; p < P::kBEach; p++) {
      const int e = threadIdx.x + p * P::kThreads;
      const int l = e / P::kCols;
      const int col = firstCol + e % P::kCols;
      bNext[p] = l < length && col < cols ? bs[static_cast<long long>(start + l) * cols + col] : T(0);
    }
  };
  auto put = [&](int buffer) {
#pragma unroll
    for (int p = 0; p < P::kAEach; p++) {
      int l;
      int r;
      aPlace(threadIdx.x + p * P::kThreads, l, r);
      aTile[buffer][l][r] = aNext[p];
    }
#pragma unroll
    for (int p = 0; p < P::kBEach; p++) {
      const int e = threadIdx.x + p * P::kThreads;
      if (e < P::kInner * P::kCols) {
        bTile[buffer][e / P::kCols][e % P::kCols] = bNext[p];
      }
    }
  };
  T sums[P::kRowsEach][P::kColsEach];
#pragma unroll
  for (int i = 0; i < P::kRowsEach; i++) {
#pragma unroll
    for (int j = 0; j < P::kColsEach; j++) {
      sums[i][j] = T(0);
    }
  }
  auto step = [&](int buffer, int l) {
    T x[P::kRowsEach];
    T y[P::kColsEach];
#pragma unroll
    for (int i = 0; i < P::kRowsEach; i++) {
      x[i] = aTile[buffer][l][ty * P::kRowsEach + i];
    }
#pragma unroll
    for (int j = 0; j < P::kColsEach; j++) {
      y[j] = bTile[buffer][l][tx * P::kColsEach + j];
    }
#pragma unroll
    for (int i = 0; i < P::kRowsEach; i++) {
#pragma unroll
      for (int j = 0; j < P::kColsEach; j++) {
        sums[i][j] = orderedFma(x[i], y[j], sums[i][j]);
      }
    }
  };
  const int tiles = (inner + P::kInner - 1) / P::kInner;
  if (tiles > 0) {
    fetch(0);
    put(0);
  }
  __syncthreads();
  for (int t = 0; t < tiles; t++) {
    const int buffer = t & 1;
    if (t + 1 < tiles) {
      fetch((t + 1) * P::kInner);
    }
    const int length = min(inner - t * P::kInner, P::kInner);
    if (length == P::kInner) {
#pragma unroll
      for (int l = 0; l < P::kInner; l++) {
        step(buffer, l);
      }
    } else {
      for (int l = 0; l < length; l++) {
        step(buffer, l);
      }
    }
    if (t + 1 < tiles) {
      put(buffer ^ 1);
    }
    __syncthreads();
  }
  T* cs = c + blockIdx.z * cStride;
#pragma unroll
  for (int i = 0; i < P::kRowsEach; i++) {
    const int row = firstRow + ty * P::kRowsEach + i;
#pragma unroll
    for (int j = 0; j < P::kColsEach; j++) {
      const int col = firstCol + tx * P::kColsEach + j;
      if (row < rows && col < cols) {
        cs[static_cast<long long>(row) * cols + col] = sums[i][j];
      }
    }
  }
}

template <typename T, typename P>
void launchOrderedTiling(bool transposeA, const void* a, const void* b, void* c, int count, int rows, int inner, int cols,
                         long long aStride, long long bStride, long long cStride) {
  dim3 grid((cols + P::kCols - 1) / P::kCols, (rows + P::kRows - 1) / P::kRows, count);
  if (transposeA) {
    orderedProduct<T, true, P><<<grid, P::kThreads, 0, cudaStreamLegacy>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(c), rows, inner, cols, aStride, bStride, cStride);
  } else {
    orderedProduct<T, false, P><<<grid, P::kThreads, 0, cudaStreamLegacy>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(c), rows, inner, cols, aStride, bStride, cStride);
  }
}

// The tilings by shape: a small square output (a Gram of the sketch, over a long inner dimension)
// gets one tile per matrix with many threads; a tall one (the update times the sketch) wide tiles
// with many entries per thread.
struct OrderedTilings {
  using Small = OrderedTiling<48, 48, 3, 3, 16>;
  using TallFloat = OrderedTiling<128, 48, 8, 6, 16>;
  using TallDouble = OrderedTiling<64, 48, 4, 6, 16>;
};

template <typename T>
void launchOrdered(bool transposeA, const void* a, const void* b, void* c, int count, int rows, int inner, int cols, long long aStride,
                   long long bStride, long long cStride) {
  if (rows <= OrderedTilings::Small::kRows && cols <= OrderedTilings::Small::kCols) {
    launchOrderedTiling<T, OrderedTilings::Small>(transposeA, a, b, c, count, rows, inner, cols, aStride, bStride, cStride);
  } else if (sizeof(T) == 4) {
    launchOrderedTiling<T, OrderedTilings::TallFloat>(transposeA, a, b, c, count, rows, inner, cols, aStride, bStride, cStride);
  } else {
    launchOrderedTiling<T, OrderedTilings::TallDouble>(transposeA, a, b, c, count, rows, inner, cols, aStride, bStride, cStride);
  }
}

}  // namespace

extern "C" {

// out[j] = round(sources[j] + up[j]·down[j]) for the fp16 (dtype 2) or bf16 (3) weights j of a
// batch, each rows×cols with factors of rank `rank`; returns -1 when every value is finite, else
// the flat index of the first that is not. Runs on GPU `device` and waits for it.
JNIEXPORT jlong JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_fuseProduct(
    JNIEnv* env, jclass, jint device, jobject up, jobject down, jobjectArray sources, jobject out, jint dtype, jint rows,
    jint cols, jint rank) {
  unsigned long long* flag = beginBatch(env, device, "loramerge fuseProduct");
  if (flag == nullptr) {
    return 0;
  }
  const auto* ups = static_cast<const double*>(env->GetDirectBufferAddress(up));
  const auto* downs = static_cast<const double*>(env->GetDirectBufferAddress(down));
  void* rounded = env->GetDirectBufferAddress(out);
  jsize weights = env->GetArrayLength(sources);
  bool launched = false;
  switch (dtype) {
    case 2: launched = launchProduct<F16, UpLayout::kByRow>(env, ups, downs, sources, rounded, rows, cols, rank, weights, flag); break;
    case 3: launched = launchProduct<BF16, UpLayout::kByRow>(env, ups, downs, sources, rounded, rows, cols, rank, weights, flag); break;
    default:
      env->ThrowNew(env->FindClass("java/lang/IllegalArgumentException"), "loramerge fuseProduct: dtype code not fp16 or bf16");
      return 0;
  }
  return launched ? endBatch(env, "loramerge fuseProduct") : 0;
}

// A batch of fp16 (dtype 2) or bf16 (3) weights fused from its stored factors, queued on the
// legacy stream without waiting: `bytes` of host memory `host` (pinned where the caller could pin
// it) copied to device memory `staging`, then event `copied` recorded (the host memory may be
// rewritten once it has passed); the factors laid out as DeviceFusion.gatherTerms lays them out
// (per term t: the jobs' float64 coefficients at starts[3t], their ups at starts[3t+1], their
// downs at starts[3t+2]), each term placed into the float64 factors `up` (count×rank×rows, by
// rank) and `down` (count×rank×cols) by placeTerm; fuseProduct into `out` with the first
// non-finite index in flags[1 + batch]; scatterIfFinite from `out` into the weights. Every array
// is libtorch's, freed by its caching allocator in the stream's order, so the Java side may close
// them as soon as this returns.
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_queueTerms(
    JNIEnv* env, jclass, jint device, jobject host, jlongArray hostOffsets, jobjectArray uploads, jlong copied,
    jobjectArray coefficients, jobjectArray upFactors, jobjectArray downFactors, jintArray ranks, jintArray upTypes,
    jintArray downTypes, jdouble factor, jobject up, jobject down, jobjectArray sources, jobject out, jobjectArray weights,
    jint dtype, jint rows, jint cols, jobject flags, jint batch) {
  if (dtype != 2 && dtype != 3) {
    env->ThrowNew(env->FindClass("java/lang/IllegalArgumentException"), "loramerge queueTerms: dtype code not fp16 or bf16");
    return;
  }
  if (failed(env, cudaSetDevice(device), "loramerge queueTerms device")) {
    return;
  }
  const char* from = static_cast<const char*>(env->GetDirectBufferAddress(host));
  jsize copies = env->GetArrayLength(uploads);
  jlong* offset = env->GetLongArrayElements(hostOffsets, nullptr);
  bool copiedAll = true;
  for (jsize i = 0; i < copies && copiedAll; i++) {
    jobject region = env->GetObjectArrayElement(uploads, i);
    copiedAll = !failed(env, cudaMemcpyAsync(env->GetDirectBufferAddress(region), from + offset[i], env->GetDirectBufferCapacity(region),
                                             cudaMemcpyHostToDevice, cudaStreamLegacy),
                        "loramerge queueTerms copy");
    env->DeleteLocalRef(region);
  }
  env->ReleaseLongArrayElements(hostOffsets, offset, JNI_ABORT);
  if (!copiedAll ||
      failed(env, cudaEventRecord(reinterpret_cast<cudaEvent_t>(copied), cudaStreamLegacy), "loramerge queueTerms event")) {
    return;
  }
  jsize terms = env->GetArrayLength(ranks);
  jint* rank = env->GetIntArrayElements(ranks, nullptr);
  jint* upType = env->GetIntArrayElements(upTypes, nullptr);
  jint* downType = env->GetIntArrayElements(downTypes, nullptr);
  jsize count = env->GetArrayLength(sources);
  int total = 0;
  for (jsize t = 0; t < terms; t++) {
    total += rank[t];
  }
  auto* ups = static_cast<double*>(env->GetDirectBufferAddress(up));
  auto* downs = static_cast<double*>(env->GetDirectBufferAddress(down));
  bool placed = true;
  for (jsize t = 0, at = 0; t < terms && placed; at += rank[t], t++) {
    long long values = static_cast<long long>(count) * rank[t] * (static_cast<long long>(rows) + cols);
    long long blocks = (values + 255) / 256;
    placeTerm<<<static_cast<unsigned int>(blocks < 4096 ? blocks : 4096), 256, 0, cudaStreamLegacy>>>(
        address(env, upFactors, t), upType[t], address(env, downFactors, t), downType[t],
        static_cast<const double*>(address(env, coefficients, t)), factor, count, rows, cols, rank[t], at, total, ups, downs);
    placed = !failed(env, cudaGetLastError(), "loramerge placeTerm launch");
  }
  env->ReleaseIntArrayElements(ranks, rank, JNI_ABORT);
  env->ReleaseIntArrayElements(upTypes, upType, JNI_ABORT);
  env->ReleaseIntArrayElements(downTypes, downType, JNI_ABORT);
  if (!placed) {
    return;
  }
  auto* flag = static_cast<unsigned long long*>(env->GetDirectBufferAddress(flags));
  void* rounded = env->GetDirectBufferAddress(out);
  bool launched =
      dtype == 2 ? launchProduct<F16, UpLayout::kByRank>(env, ups, downs, sources, rounded, rows, cols, total, count, flag + 1 + batch)
                 : launchProduct<BF16, UpLayout::kByRank>(env, ups, downs, sources, rounded, rows, cols, total, count, flag + 1 + batch);
  if (launched) {
    queueScatter(env, static_cast<const char*>(rounded), weights, static_cast<long long>(rows) * cols * 2, flag, batch);
  }
}

// out[j][k] = round(product[j][k] + sources[j][k]) for the weights j of a batch; returns -1 when
// every value is finite, else the flat index of the first that is not. dtype: 0 F64, 1 F32,
// 2 F16, 3 BF16. Runs on GPU `device` and waits for it.
JNIEXPORT jlong JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_fuseRound(
    JNIEnv* env, jclass, jint device, jobject product, jobjectArray sources, jobject out, jint dtype, jlong perWeight) {
  // libtorch's work on its stream (the product, the sources' copies) is done before the kernel
  // reads it, whichever stream libtorch was told to use.
  unsigned long long* flag = beginBatch(env, device, "loramerge fuseRound");
  if (flag == nullptr) {
    return 0;
  }
  const auto* products = static_cast<const double*>(env->GetDirectBufferAddress(product));
  void* rounded = env->GetDirectBufferAddress(out);
  jsize weights = env->GetArrayLength(sources);
  bool launched = false;
  switch (dtype) {
    case 0: launched = launch<F64>(env, products, sources, rounded, perWeight, weights, flag); break;
    case 1: launched = launch<F32>(env, products, sources, rounded, perWeight, weights, flag); break;
    case 2: launched = launch<F16>(env, products, sources, rounded, perWeight, weights, flag); break;
    case 3: launched = launch<BF16>(env, products, sources, rounded, perWeight, weights, flag); break;
    default:
      env->ThrowNew(env->FindClass("java/lang/IllegalArgumentException"), "loramerge fuseRound: unknown dtype code");
      return 0;
  }
  return launched ? endBatch(env, "loramerge fuseRound") : 0;
}

// Copies weight j's bytes of `from` (bytesPerWeight each, one after the other) into weights[j],
// on the legacy stream without waiting: whatever reads the weights or reuses `from`'s memory
// (libtorch's caching allocator, the next batch) is queued after the copies on the same stream.
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
}

// Copies from[j] into to[j] (device memory of GPU `device`, each buffer's capacity in bytes, the
// same for both), on the legacy stream without waiting: a weight's original kept or restored, all
// of a fuse's in one call where libtorch takes a call and a dispatch each.
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_copies(
    JNIEnv* env, jclass, jint device, jobjectArray from, jobjectArray to) {
  if (failed(env, cudaSetDevice(device), "loramerge copies device")) {
    return;
  }
  jsize count = env->GetArrayLength(from);
  for (jsize j = 0; j < count; j++) {
    jobject source = env->GetObjectArrayElement(from, j);
    jlong bytes = env->GetDirectBufferCapacity(source);
    const void* values = env->GetDirectBufferAddress(source);
    env->DeleteLocalRef(source);
    if (failed(env, cudaMemcpyAsync(address(env, to, j), values, bytes, cudaMemcpyDeviceToDevice, cudaStreamLegacy),
               "loramerge copies")) {
      return;
    }
  }
}

// Waits for everything queued on GPU `device`'s legacy stream: a fuse's last scatter.
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_synchronize(JNIEnv* env, jclass, jint device) {
  if (!failed(env, cudaSetDevice(device), "loramerge synchronize device")) {
    failed(env, cudaStreamSynchronize(cudaStreamLegacy), "loramerge synchronize");
  }
}

// A CUDA event on GPU `device`, for queueTerms to record when it has copied a host buffer;
// 0 (with an exception pending) where CUDA refuses.
JNIEXPORT jlong JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_newEvent(JNIEnv* env, jclass, jint device) {
  cudaEvent_t event = nullptr;
  if (failed(env, cudaSetDevice(device), "loramerge newEvent device") ||
      failed(env, cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "loramerge newEvent")) {
    return 0;
  }
  return reinterpret_cast<jlong>(event);
}

// Waits until the device has passed the event's last record (at once where it was never recorded).
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_synchronizeEvent(JNIEnv* env, jclass, jlong event) {
  failed(env, cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(event)), "loramerge synchronizeEvent");
}

JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_destroyEvent(JNIEnv* env, jclass, jlong event) {
  failed(env, cudaEventDestroy(reinterpret_cast<cudaEvent_t>(event)), "loramerge destroyEvent");
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

// Bytes of device work memory mergeTasks needs for `slots` slots of `perSlot` elements.
JNIEXPORT jlong JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_taskWorkBytes(JNIEnv*, jclass, jint slots, jlong perSlot) {
  return taskWorkBytes(slots, perSlot);
}

// The merged dense updates of `members` modules of rows×cols into `out` (members×rows×cols
// float32), queued on the legacy stream: `hostBytes` of `host` (slots, the members' first slots,
// the factors from byte `factorsStart`, as DeviceTasks lays them out) copied to `staging`, waited
// for (the host memory may be reused when this returns), then each slot's update into `deltas`
// (slots×rows×cols), the magnitude selects where prune is 1 or 3 (using `work`, taskWorkBytes
// long), and the combination. prune: 0 none, 1 magnitude keeping `keep` entries, 2 random below
// `randomThreshold` (⌈density·2⁵³⌉) dividing by density, 3 outliers: what the select of `keep`
// keeps less the non-zero entries the select of `outlierKeep` keeps, 4 ranked in each row,
// density ± epsilon (rows of at most 16384, TaskKernels.RANKED_MAX_COLUMNS); combine: 0 sum, 1
// TIES by total, 2 TIES by frequency.
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_mergeTasks(
    JNIEnv* env, jclass, jint device, jobject host, jlong hostBytes, jobject staging, jint slots, jint members,
    jlong factorsStart, jint rows, jint cols, jobject deltas, jobject work, jint prune, jdouble density, jdouble epsilon,
    jlong keep, jlong outlierKeep, jlong randomThreshold, jint combine, jobject out) {
  const char* what = "loramerge mergeTasks";
  if (failed(env, cudaSetDevice(device), what)) {
    return;
  }
  auto* staged = static_cast<char*>(env->GetDirectBufferAddress(staging));
  if (failed(env, cudaMemcpyAsync(staged, env->GetDirectBufferAddress(host), hostBytes, cudaMemcpyHostToDevice, cudaStreamLegacy),
             what) ||
      failed(env, cudaStreamSynchronize(cudaStreamLegacy), what)) {
    return;
  }
  const auto* slotTable = reinterpret_cast<const TaskSlot*>(staged);
  const auto* memberFirst = reinterpret_cast<const int*>(staged + static_cast<long long>(slots) * sizeof(TaskSlot));
  const auto* factors = reinterpret_cast<const float*>(staged + factorsStart);
  auto* updates = static_cast<float*>(env->GetDirectBufferAddress(deltas));
  auto* merged = static_cast<float*>(env->GetDirectBufferAddress(out));
  const long long perSlot = static_cast<long long>(rows) * cols;
  dim3 productGrid((cols + 255) / 256, (rows + kProductRows - 1) / kProductRows, slots);
  lowRankProducts<<<productGrid, 256, 0, cudaStreamLegacy>>>(factors, slotTable, rows, cols, updates);
  if (failed(env, cudaGetLastError(), "loramerge lowRankProducts launch")) {
    return;
  }
  char* workspace = static_cast<char*>(env->GetDirectBufferAddress(work));
  auto* states = reinterpret_cast<SelectState*>(workspace);
  auto* outliers = states + slots;
  auto* histograms = reinterpret_cast<unsigned int*>(workspace + 2LL * slots * sizeof(SelectState));
  auto* chunkTies = histograms + static_cast<long long>(slots) * kSelectBins;
  if ((prune == 1 || prune == 3) && !queueSelect(env, updates, perSlot, slots, keep, states, histograms, chunkTies)) {
    return;
  }
  if (prune == 3 && !queueSelect(env, updates, perSlot, slots, outlierKeep, outliers, histograms, chunkTies)) {
    return;
  }
  if (prune == 4) {
    int width = 1;
    while (width < cols) {
      width <<= 1;
    }
    const int sharedBytes = width * static_cast<int>(sizeof(unsigned long long));
    if (failed(env, cudaFuncSetAttribute(rankedPrune, cudaFuncAttributeMaxDynamicSharedMemorySize, sharedBytes),
               "loramerge rankedPrune shared memory")) {
      return;
    }
    const int threads = width < 2 * kRankThreads ? (width < 64 ? 32 : width / 2) : kRankThreads;
    rankedPrune<<<dim3(rows, slots), threads, sharedBytes, cudaStreamLegacy>>>(updates, slotTable, rows, cols, width, density,
                                                                               epsilon);
    if (failed(env, cudaGetLastError(), "loramerge rankedPrune launch")) {
      return;
    }
  }
  combineTasks<<<dim3(stridedBlocks(perSlot, 2048), members), 256, 0, cudaStreamLegacy>>>(
      updates, perSlot, slotTable, memberFirst, states, outliers, prune, density, static_cast<unsigned long long>(randomThreshold),
      combine, merged);
  failed(env, cudaGetLastError(), "loramerge combineTasks launch");
}

// Queues C = A·B (A rows×inner) or Aᵀ·B (A inner×rows, transposeA) for `count` matrices on the
// legacy stream, in float64 where `doubles`, else float32; see orderedProduct.
JNIEXPORT void JNICALL Java_dev_loramerge_internal_fuse_CudaKernels_orderedProduct(
    JNIEnv* env, jclass, jint device, jboolean doubles, jboolean transposeA, jobject a, jobject b, jobject c, jint count, jint rows,
    jint inner, jint cols, jlong aStride, jlong bStride, jlong cStride) {
  if (failed(env, cudaSetDevice(device), "loramerge orderedProduct")) {
    return;
  }
  const void* aMemory = env->GetDirectBufferAddress(a);
  const void* bMemory = env->GetDirectBufferAddress(b);
  void* cMemory = env->GetDirectBufferAddress(c);
  if (doubles) {
    launchOrdered<double>(transposeA, aMemory, bMemory, cMemory, count, rows, inner, cols, aStride, bStride, cStride);
  } else {
    launchOrdered<float>(transposeA, aMemory, bMemory, cMemory, count, rows, inner, cols, aStride, bStride, cStride);
  }
  failed(env, cudaGetLastError(), "loramerge orderedProduct launch");
}

}  // extern "C"

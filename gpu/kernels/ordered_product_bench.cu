// orderedProduct's tilings compared: each one's bytes against the host's chains (OrderedProducts:
// each entry the fused multiply-adds in increasing inner index from +0) on odd shapes with
// cancelling values and signed zeros, and the time of the products one ties_svd merge of SDXL's
// 722 attention modules makes at rank 32 (width 42), per kind of product, next to cuBLAS's on the
// same shapes where built with -DWITH_CUBLAS (cuBLAS's order of additions differs: the speed to aim
// at, not the bytes). Needs only nvcc and the JNI headers (gpu/device-run.sh's kbench stage builds
// it, with cuBLAS where it finds it):
//
//   nvcc -arch=native -O3 -std=c++17 -I$JAVA_HOME/include -I$JAVA_HOME/include/linux \
//     -o ordered-product-bench gpu/kernels/ordered_product_bench.cu [-DWITH_CUBLAS -lcublas]
//   ./ordered-product-bench [RUNS]     (exit status 1 when any tiling's bytes differ)
//
// (target/gpu/jdk-include, which gpu/prepare.sh writes, holds the JNI headers on the GPU machine.)
#include "loramerge_cuda.cu"
#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)
#ifdef WITH_CUBLAS
#define CB(x) do { cublasStatus_t e = (x); if (e != CUBLAS_STATUS_SUCCESS) { printf("cuBLAS %s at %d: %d\n", #x, __LINE__, (int) e); exit(1);} } while (0)
#endif

// The kernel before its tilings were chosen (one buffer, 64×48 tiles, 4×3 per thread), for comparison.
template <typename T, bool kTransposeA>
__global__ void __launch_bounds__(256) singleBuffered(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c, int rows,
                                                      int inner, int cols, long long aStride, long long bStride, long long cStride) {
  __shared__ T aTile[16][64];
  __shared__ T bTile[16][48];
  const int tx = threadIdx.x % 16;
  const int ty = threadIdx.x / 16;
  const int firstRow = blockIdx.y * 64;
  const int firstCol = blockIdx.x * 48;
  const T* as = a + blockIdx.z * aStride;
  const T* bs = b + blockIdx.z * bStride;
  T sums[4][3] = {};
  for (int start = 0; start < inner; start += 16) {
    const int length = min(inner - start, 16);
    for (int e = threadIdx.x; e < 16 * 64; e += 256) {
      const int l = kTransposeA ? e / 64 : e % 16;
      const int r = kTransposeA ? e % 64 : e / 16;
      const int row = firstRow + r;
      aTile[l][r] = l < length && row < rows
                        ? (kTransposeA ? as[(long long) (start + l) * rows + row] : as[(long long) row * inner + start + l])
                        : T(0);
    }
    for (int e = threadIdx.x; e < 16 * 48; e += 256) {
      const int l = e / 48;
      const int col = firstCol + e % 48;
      bTile[l][e % 48] = l < length && col < cols ? bs[(long long) (start + l) * cols + col] : T(0);
    }
    __syncthreads();
    for (int l = 0; l < length; l++) {
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) sums[i][j] = orderedFma(aTile[l][ty * 4 + i], bTile[l][tx * 3 + j], sums[i][j]);
    }
    __syncthreads();
  }
  T* cs = c + blockIdx.z * cStride;
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++) {
      const int row = firstRow + ty * 4 + i, col = firstCol + tx * 3 + j;
      if (row < rows && col < cols) cs[(long long) row * cols + col] = sums[i][j];
    }
}

// One product of a batch: C = A·B or Aᵀ·B, count matrices, strides 0 for a shared operand.
struct Product {
  bool transposeA;
  int count, rows, inner, cols;
  long long aStride, bStride;
};

using Launch = void (*)(bool, const void*, const void*, void*, int, int, int, int, long long, long long, long long);

template <typename T>
static void launchBefore(bool transposeA, const void* a, const void* b, void* c, int count, int rows, int inner, int cols, long long aStride,
                         long long bStride, long long cStride) {
  dim3 grid((cols + 47) / 48, (rows + 63) / 64, count);
  if (transposeA) singleBuffered<T, true><<<grid, 256>>>((const T*) a, (const T*) b, (T*) c, rows, inner, cols, aStride, bStride, cStride);
  else singleBuffered<T, false><<<grid, 256>>>((const T*) a, (const T*) b, (T*) c, rows, inner, cols, aStride, bStride, cStride);
}

struct Variant { const char* name; Launch f32; Launch f64; };
#define TILING(R, C, RE, CE, K) {"tiles " #R "x" #C ", " #RE "x" #CE " each, inner " #K, \
    launchOrderedTiling<float, OrderedTiling<R, C, RE, CE, K>>, launchOrderedTiling<double, OrderedTiling<R, C, RE, CE, K>>}
static Variant variants[] = {
  {"library (launchOrdered)", launchOrdered<float>, launchOrdered<double>},
  {"before: 64x48, 4x3 each, one buffer", launchBefore<float>, launchBefore<double>},
  TILING(64, 48, 4, 3, 16),
  TILING(64, 48, 4, 6, 16),
  TILING(128, 48, 8, 6, 16),
  TILING(128, 48, 8, 3, 16),
  TILING(128, 48, 8, 6, 8),
  TILING(64, 48, 8, 6, 16),
  TILING(48, 48, 3, 3, 16),
  TILING(48, 48, 6, 6, 16),
  TILING(128, 48, 4, 6, 16),
};
constexpr int kVariants = sizeof variants / sizeof variants[0];

template <typename T>
static std::vector<T> hostProduct(const std::vector<T>& a, const std::vector<T>& b, const Product& p) {
  std::vector<T> c((size_t) p.count * p.rows * p.cols);
  for (int z = 0; z < p.count; z++)
    for (int r = 0; r < p.rows; r++)
      for (int col = 0; col < p.cols; col++) {
        T sum = 0;
        for (int l = 0; l < p.inner; l++) {
          T x = p.transposeA ? a[z * p.aStride + (size_t) l * p.rows + r] : a[z * p.aStride + (size_t) r * p.inner + l];
          sum = std::fma(x, b[z * p.bStride + (size_t) l * p.cols + col], sum);
        }
        c[((size_t) z * p.rows + r) * p.cols + col] = sum;
      }
  return c;
}

template <typename T>
static T* upload(const std::vector<T>& v) {
  T* d; CK(cudaMalloc(&d, std::max<size_t>(v.size(), 1) * sizeof(T)));
  CK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
static int exactness(const Product& p, uint64_t seed) {
  std::mt19937_64 random(seed);
  const T pick[] = {T(1), T(-1), T(0.5), T(3), T(-0.0), T(0), T(1) + std::numeric_limits<T>::epsilon(), T(1e-3), T(-7)};
  size_t na = (size_t) (p.aStride ? p.count : 1) * p.rows * p.inner, nb = (size_t) (p.bStride ? p.count : 1) * p.inner * p.cols;
  std::vector<T> a(na), b(nb);
  for (T& x : a) x = random() % 4 == 0 ? pick[random() % 9] : T((double) (int64_t) (random() >> 11) * 0x1p-52 - 1);
  for (T& x : b) x = random() % 4 == 0 ? pick[random() % 9] : T((double) (int64_t) (random() >> 11) * 0x1p-52 - 1);
  // Some all-negative-zero products, whose sum must stay −0.
  for (int r = 0; r < std::min(p.rows, 3); r++)
    for (int l = 0; l < p.inner; l++) (p.transposeA ? a[(size_t) l * p.rows + r] : a[(size_t) r * p.inner + l]) = T(-0.0);
  for (int l = 0; l < p.inner; l++) b[(size_t) l * p.cols] = T(1);
  std::vector<T> expected = hostProduct(a, b, p);
  T* da = upload(a); T* db = upload(b);
  size_t nc = expected.size();
  T* dc; CK(cudaMalloc(&dc, nc * sizeof(T)));
  std::vector<T> got(nc);
  int failures = 0;
  for (Variant& v : variants) {
    CK(cudaMemset(dc, 0x55, nc * sizeof(T)));
    (sizeof(T) == 4 ? v.f32 : v.f64)(p.transposeA, da, db, dc, p.count, p.rows, p.inner, p.cols, p.aStride, p.bStride, (long long) p.rows * p.cols);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got.data(), dc, nc * sizeof(T), cudaMemcpyDeviceToHost));
    long long bad = 0;
    for (size_t k = 0; k < nc; k++) bad += std::memcmp(&got[k], &expected[k], sizeof(T)) != 0;
    if (bad) { failures++; printf("  FAIL %s: %lld of %zu differ (%s %dx%dx%d%s)\n", v.name, bad, nc, sizeof(T) == 4 ? "f32" : "f64", p.rows, p.inner, p.cols, p.transposeA ? " At" : ""); }
  }
  cudaFree(da); cudaFree(db); cudaFree(dc);
  return failures;
}

__global__ void fill(float* f, double* d, long long n, uint64_t seed) {
  for (long long k = blockIdx.x * (long long) blockDim.x + threadIdx.x; k < n; k += (long long) gridDim.x * blockDim.x) {
    uint64_t z = seed + k * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; z = (z ^ (z >> 27)) * 0x94D049BB133111EBull; z ^= z >> 31;
    double v = (double) (z >> 11) * 0x1p-53 * 2 - 1;
    if (f) f[k] = (float) v;
    if (d) d[k] = v;
  }
}

static unsigned long long differs(const void* a, const void* b, size_t bytes) {
  std::vector<unsigned char> x(bytes), y(bytes);
  CK(cudaMemcpy(x.data(), a, bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(y.data(), b, bytes, cudaMemcpyDeviceToHost));
  return std::memcmp(x.data(), y.data(), bytes) != 0;
}

#ifdef WITH_CUBLAS
// cuBLAS is column-major: row-major C = A·B is Cᵀ = Bᵀ·Aᵀ.
static void cublasProduct(cublasHandle_t h, bool doubles, const Product& p, const void* a, const void* b, void* c) {
  long long cStride = (long long) p.rows * p.cols;
  cublasOperation_t opA = p.transposeA ? CUBLAS_OP_T : CUBLAS_OP_N;
  int lda = p.transposeA ? p.rows : p.inner;
  if (doubles) {
    const double one = 1, zero = 0;
    CB(cublasDgemmStridedBatched(h, CUBLAS_OP_N, opA, p.cols, p.rows, p.inner, &one, (const double*) b, p.cols, p.bStride,
                                 (const double*) a, lda, p.aStride, &zero, (double*) c, p.cols, cStride, p.count));
  } else {
    const float one = 1, zero = 0;
    CB(cublasSgemmStridedBatched(h, CUBLAS_OP_N, opA, p.cols, p.rows, p.inner, &one, (const float*) b, p.cols, p.bStride,
                                 (const float*) a, lda, p.aStride, &zero, (float*) c, p.cols, cStride, p.count));
  }
}
#endif

// A kind of product in one ties_svd re-rank of a group of same-shape modules, and how often it runs.
struct Kind { const char* name; bool doubles; int times; Product (*of)(int count, int m, int n, int w, int k); };
static Kind kinds[] = {
  {"f32 D.X   (m x n . n x w)", false, 3, [](int c, int m, int n, int w, int) { return Product{false, c, m, n, w, (long long) m * n, (long long) n * w}; }},
  {"f32 Dt.Q  (n x m . m x w)", false, 3, [](int c, int m, int n, int w, int) { return Product{true, c, n, m, w, (long long) m * n, (long long) m * w}; }},
  {"f64 YtY   (w x m . m x w)", true, 4, [](int c, int m, int, int w, int) { return Product{true, c, w, m, w, (long long) m * w, (long long) m * w}; }},
  {"f64 PtP   (w x n . n x w)", true, 1, [](int c, int, int n, int w, int) { return Product{true, c, w, n, w, (long long) n * w, (long long) n * w}; }},
  {"f64 Y.R   (m x w . w x w)", true, 3, [](int c, int m, int, int w, int) { return Product{false, c, m, w, w, (long long) m * w, (long long) w * w}; }},
  {"f64 Q.L   (m x w . w x k)", true, 1, [](int c, int m, int, int w, int k) { return Product{false, c, m, w, k, (long long) m * w, (long long) w * k}; }},
  {"f64 P.R   (n x w . w x k)", true, 1, [](int c, int, int n, int w, int k) { return Product{false, c, n, w, k, (long long) n * w, (long long) w * k}; }},
};
constexpr int kKinds = sizeof kinds / sizeof kinds[0];

int main(int argc, char** argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 5;
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  int failures = 0;
  // 1. Exactness against the host's chains.
  Product smalls[] = {{false, 2, 100, 77, 42, 100 * 77, 77 * 42}, {true, 2, 100, 77, 42, 100 * 77, 77 * 42}, {false, 3, 33, 129, 13, 33 * 129, 0},
                      {true, 2, 42, 1500, 42, 1500 * 42, 1500 * 42}, {false, 2, 130, 1000, 42, 130 * 1000, 1000 * 42},
                      {true, 2, 257, 64, 64, 257 * 64, 64 * 64}, {false, 1, 5, 3, 35, 0, 0}, {true, 2, 200, 17, 50, 200 * 17, 17 * 50}};
  for (Product& p : smalls) failures += exactness<float>(p, 11 + p.rows) + exactness<double>(p, 23 + p.inner);
  printf("exactness on %zu shapes: %s\n", sizeof smalls / sizeof smalls[0], failures ? "FAILED" : "every tiling gives the host's bytes");
  // 2. Speed: one ties_svd re-rank's products over SDXL's attention modules (count, m, n).
  struct Group { int count, m, n; } sdxl[] = {{60, 10240, 1280}, {372, 1280, 1280}, {120, 1280, 2048}, {60, 1280, 5120},
                                             {10, 5120, 640}, {20, 640, 2048}, {10, 640, 2560}, {70, 640, 640}};
  const int w = 42, k = 32;
#ifdef WITH_CUBLAS
  cublasHandle_t handle; CB(cublasCreate(&handle));
  const int measured = kVariants + 1;
#else
  const int measured = kVariants;
#endif
  // times[v][kind] summed over groups, median of runs; v == kVariants is cuBLAS.
  std::vector<std::vector<std::vector<float>>> times(kVariants + 1, std::vector<std::vector<float>>(kKinds, std::vector<float>(runs, 0)));
  std::vector<unsigned long long> bad(kVariants, 0);
  cudaEvent_t start, stop; cudaEventCreate(&start); cudaEventCreate(&stop);
  for (Group g : sdxl) {
    for (int kind = 0; kind < kKinds; kind++) {
      Product p = kinds[kind].of(g.count, g.m, g.n, w, k);
      bool dbl = kinds[kind].doubles;
      size_t size = dbl ? 8 : 4;
      long long na = (long long) p.count * std::max<long long>(p.aStride, 1), nb = (long long) p.count * std::max<long long>(p.bStride, 1);
      long long nc = (long long) p.count * p.rows * p.cols;
      void *a, *b, *c, *reference;
      CK(cudaMalloc(&a, na * size)); CK(cudaMalloc(&b, nb * size)); CK(cudaMalloc(&c, nc * size)); CK(cudaMalloc(&reference, nc * size));
      fill<<<1024, 256>>>(dbl ? nullptr : (float*) a, dbl ? (double*) a : nullptr, na, 1 + kind);
      fill<<<1024, 256>>>(dbl ? nullptr : (float*) b, dbl ? (double*) b : nullptr, nb, 100 + kind);
      (dbl ? variants[1].f64 : variants[1].f32)(p.transposeA, a, b, reference, p.count, p.rows, p.inner, p.cols, p.aStride, p.bStride, (long long) p.rows * p.cols);
      CK(cudaDeviceSynchronize());
      for (int v = 0; v < measured; v++) {
        auto once = [&]() {
#ifdef WITH_CUBLAS
          if (v == kVariants) { cublasProduct(handle, dbl, p, a, b, c); return; }
#endif
          (dbl ? variants[v].f64 : variants[v].f32)(p.transposeA, a, b, c, p.count, p.rows, p.inner, p.cols, p.aStride, p.bStride, (long long) p.rows * p.cols);
        };
        once();
        CK(cudaDeviceSynchronize());
        if (v < kVariants) bad[v] += differs(c, reference, nc * size);
        for (int r = 0; r < runs; r++) {
          cudaEventRecord(start);
          once();
          cudaEventRecord(stop);
          CK(cudaEventSynchronize(stop));
          float ms; cudaEventElapsedTime(&ms, start, stop);
          times[v][kind][r] += ms;
        }
      }
      cudaFree(a); cudaFree(b); cudaFree(c); cudaFree(reference);
    }
  }
  printf("one ties_svd re-rank of SDXL's 722 attention modules, width %d, rank %d: ms per kind of product (median of %d runs, times run), total\n", w, k, runs);
  printf("%-40s", "");
  for (int kind = 0; kind < kKinds; kind++) printf(" %14.14s", kinds[kind].name);
  printf(" %9s\n", "total");
  for (int v = 0; v < measured; v++) {
    printf("%-40s", v == kVariants ? "cuBLAS (other bytes)" : variants[v].name);
    double total = 0;
    for (int kind = 0; kind < kKinds; kind++) {
      std::vector<float> t = times[v][kind]; std::sort(t.begin(), t.end());
      printf(" %8.2f x%d   ", t[runs / 2], kinds[kind].times);
      total += t[runs / 2] * kinds[kind].times;
    }
    printf(" %9.2f%s\n", total, v < kVariants && bad[v] ? "  DIFFERS from before" : "");
    if (v < kVariants && bad[v]) failures++;
  }
  printf(failures ? "FAILURES %d\n" : "ALL EXACT\n", failures);
  return failures ? 1 : 0;
}

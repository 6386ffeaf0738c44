// fuseProduct's tilings compared: each one's bytes against a float64 reference computed here in
// the host's order (NarrowFusion.exactUpdate) on odd shapes and ranks with cancelling values, and
// its time on SDXL's 722 attention weights at rank 32, with its bytes against the first tiling's
// (ProductTiling with up laid out by rank, as queueTerms launches it). Needs only nvcc and the JNI headers:
//
//   nvcc -arch=native -O3 -std=c++17 -fmad=false -Xcompiler -ffp-contract=off \
//     -I$JAVA_HOME/include -I$JAVA_HOME/include/linux -o fuse-product-bench gpu/kernels/fuse_product_bench.cu
//   ./fuse-product-bench [RUNS]        (exit status 1 when any tiling's bytes differ)
//
// (target/gpu/jdk-include, which gpu/prepare.sh writes, holds the JNI headers on the GPU machine.)
#include "loramerge_cuda.cu"
#include <cstdio>
#include <cstring>
#include <vector>
#include <algorithm>
#include <random>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1);} } while (0)

static float hostRoundToOdd(double x) {
  float t = (float) x;  // RN; fix to truncation
  if ((double) t != x) {
    // toward zero
    if (std::fabs((double) t) > std::fabs(x)) t = std::nextafter(t, 0.0f);
    uint32_t bits; std::memcpy(&bits, &t, 4); bits |= 1; std::memcpy(&t, &bits, 4);
  }
  return t;
}

// NarrowFusion.exactUpdate's order on the host (this file is compiled with -fmad=false and the host
// with -ffp-contract=off); sequential = one running sum, to show the data tell the orders apart.
static uint16_t hostElement(const double* up, const double* down, int rank, int cols, int row, int col, uint16_t source,
                            bool bf16, bool sequential) {
  double s[4] = {0, 0, 0, 0};
  int whole = rank & ~3;
  for (int l = 0; l < rank; l++) {
    double p = up[(long) row * rank + l] * down[(long) l * cols + col];
    int lane = sequential ? 0 : (l < whole ? (l & 3) : 0);
    s[lane] = s[lane] + p;
  }
  double update = (s[0] + s[1]) + (s[2] + s[3]);
  double w;
  if (bf16) { uint32_t b = (uint32_t) source << 16; float f; std::memcpy(&f, &b, 4); w = f; }
  else { __half_raw hr; hr.x = source; w = __half2float(__half(hr)); }
  float odd = hostRoundToOdd(w + update);
  if (bf16) { __nv_bfloat16 r = __float2bfloat16_rn(odd); __nv_bfloat16_raw rr = r; return rr.x; }
  __half r = __float2half_rn(odd); __half_raw rr = r; return rr.x;
}

__global__ void countDiffers(const uint16_t* a, const uint16_t* b, long long n, unsigned long long* count) {
  unsigned long long local = 0;
  for (long long k = blockIdx.x * (long long) blockDim.x + threadIdx.x; k < n; k += (long long) gridDim.x * blockDim.x) {
    local += a[k] != b[k];
  }
  atomicAdd(count, local);
}

struct Problem {
  int rows, cols, rank, count;
  double *up, *upByRank, *down;
  uint16_t *source, *out;
  std::vector<double> hostUp, hostDown;
  std::vector<uint16_t> hostSource;
};

static Problem make(int rows, int cols, int rank, int count, bool adversarial, uint64_t seed, bool bf16Big = false) {
  Problem p{rows, cols, rank, count};
  std::mt19937_64 random(seed);
  std::uniform_real_distribution<double> uniform(-1, 1);
  size_t nu = (size_t) count * rows * rank, nd = (size_t) count * rank * cols, nw = (size_t) count * rows * cols;
  p.hostUp.resize(nu); p.hostDown.resize(nd); p.hostSource.resize(nw);
  const double pick[] = {0x1p40, -0x1p40, 1 + 0x1p-11, 1 + 0x1p-8, 0x1p-40, -0x1p-40, 0.0, -0.0, 1.0, -1.0, 0.5};
  for (size_t k = 0; k < nu; k++) p.hostUp[k] = adversarial ? pick[random() % 11] : uniform(random) * 0.02;
  for (size_t k = 0; k < nd; k++) p.hostDown[k] = adversarial ? (random() % 8 == 0 ? -0.0 : (random() % 2 ? 1.0 : -1.0)) : uniform(random) * 0.02;
  if (!adversarial && bf16Big) { for (size_t k = 0; k < nw; k++) { uint64_t r = random(); p.hostSource[k] = (uint16_t) ((r & 0x807F) | ((110 + (r >> 16) % 14) << 7)); } } else
  for (size_t k = 0; k < nw; k++) {
    if (adversarial) { p.hostSource[k] = random() % 5 == 0 ? 0x8000 : 0; }
    else { uint64_t r = random(); p.hostSource[k] = (uint16_t) ((r & 0x83FF) | ((5 + (r >> 16) % 9) << 10)); }
  }
  std::vector<double> byRank(nu);
  for (int w = 0; w < count; w++)
    for (int r = 0; r < rows; r++)
      for (int l = 0; l < rank; l++) byRank[((size_t) w * rank + l) * rows + r] = p.hostUp[((size_t) w * rows + r) * rank + l];
  CK(cudaMalloc(&p.up, nu * 8)); CK(cudaMalloc(&p.upByRank, nu * 8)); CK(cudaMalloc(&p.down, nd * 8));
  CK(cudaMemcpy(p.upByRank, byRank.data(), nu * 8, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&p.source, nw * 2)); CK(cudaMalloc(&p.out, nw * 2));
  CK(cudaMemcpy(p.up, p.hostUp.data(), nu * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(p.down, p.hostDown.data(), nd * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(p.source, p.hostSource.data(), nw * 2, cudaMemcpyHostToDevice));
  return p;
}

static void release(Problem& p) { cudaFree(p.up); cudaFree(p.upByRank); cudaFree(p.down); cudaFree(p.source); cudaFree(p.out); }

template <typename K, typename P, UpLayout L = UpLayout::kByRank>
static void runTiled(Problem& p, uint16_t* out) {
  dim3 grid((p.cols + P::kColumns - 1) / P::kColumns, (p.rows + P::kRows - 1) / P::kRows, 1);
  long long per = (long long) p.rows * p.cols;
  unsigned long long* notFinite; CK(cudaGetSymbolAddress(reinterpret_cast<void**>(&notFinite), firstNotFinite));
  for (int first = 0; first < p.count; first += kWeightsPerLaunch) {
    int n = std::min(p.count - first, kWeightsPerLaunch);
    Sources s{};
    for (int j = 0; j < n; j++) s.pointers[j] = p.source + (first + j) * per;
    grid.z = n;
    fuseProduct<K, P, L><<<grid, P::kThreads>>>(L == UpLayout::kByRank ? p.upByRank : p.up, p.down, s, reinterpret_cast<typename K::T*>(out), p.rows, p.cols, p.rank, first, notFinite);
  }
  CK(cudaGetLastError());
}

using Runner = void (*)(Problem&, uint16_t*);
struct Variant { const char* name; Runner f16; Runner bf16; };

#define TILED(TX, TY, TM, TN, KC) {"tiled " #TX "x" #TY " threads, " #TM "x" #TN " each, chunk " #KC, runTiled<F16, Tiling<TX, TY, TM, TN, KC>>, runTiled<BF16, Tiling<TX, TY, TM, TN, KC>>}
static Variant variants[] = {
  {"ProductTiling, up by rank (queueTerms)", runTiled<F16, ProductTiling>, runTiled<BF16, ProductTiling>},
  {"ProductTiling, up by row (fuseProduct)", runTiled<F16, ProductTiling, UpLayout::kByRow>, runTiled<BF16, ProductTiling, UpLayout::kByRow>},
  TILED(16, 8, 4, 2, 16),
  TILED(16, 8, 4, 4, 32),
  TILED(16, 8, 8, 2, 32),
  TILED(16, 8, 2, 4, 32),
  TILED(32, 4, 4, 2, 32),
  TILED(8, 16, 4, 2, 32),
  TILED(16, 16, 4, 2, 32),
  TILED(16, 16, 2, 2, 32),
  TILED(8, 8, 4, 4, 32),
  TILED(16, 4, 4, 4, 32),
  TILED(16, 8, 4, 2, 32),
  TILED(16, 16, 4, 4, 16),
  TILED(32, 8, 4, 4, 16),
  TILED(32, 4, 4, 4, 16),
  TILED(16, 8, 8, 4, 8),
  TILED(32, 8, 2, 4, 16),
  };
constexpr int kVariants = sizeof variants / sizeof variants[0];

static unsigned long long differs(const uint16_t* a, const uint16_t* b, long long n) {
  unsigned long long* c; CK(cudaMalloc(&c, 8)); CK(cudaMemset(c, 0, 8));
  countDiffers<<<1024, 256>>>(a, b, n, c);
  unsigned long long h; CK(cudaMemcpy(&h, c, 8, cudaMemcpyDeviceToHost)); cudaFree(c);
  return h;
}

int main(int argc, char** argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 5;
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s\n", prop.name);
  int failures = 0;
  // 1. Exactness against the host's order, on odd shapes and ranks with cancelling values.
  struct Small { int rows, cols, rank; } smalls[] = {{100, 77, 7}, {33, 129, 13}, {64, 64, 4}, {130, 200, 32}, {17, 300, 1}, {40, 50, 18}, {257, 129, 64}, {5, 3, 35}};
  // Adversarial values (cancellations, signed zeros, ties) take the exact path; realistic ones
  // (the SDXL section's distributions) mostly the float32 estimate.
  for (Small s : smalls) {
    for (int kind = 0; kind < 4; kind++) {
      const int bf = kind % 2;
      const bool adversarial = kind < 2;
      Problem p = make(s.rows, s.cols, s.rank, 3, adversarial, 1000 + s.rank, bf && !adversarial);
      long long n = (long long) p.count * p.rows * p.cols;
      std::vector<uint16_t> expected(n), sequential(n), got(n);
      long long per = (long long) p.rows * p.cols;
      for (int w = 0; w < p.count; w++)
        for (int r = 0; r < p.rows; r++)
          for (int c = 0; c < p.cols; c++) {
            const double* u = p.hostUp.data() + (size_t) w * p.rows * p.rank;
            const double* d = p.hostDown.data() + (size_t) w * p.rank * p.cols;
            uint16_t src = p.hostSource[w * per + (long long) r * p.cols + c];
            expected[w * per + (long long) r * p.cols + c] = hostElement(u, d, p.rank, p.cols, r, c, src, bf, false);
            sequential[w * per + (long long) r * p.cols + c] = hostElement(u, d, p.rank, p.cols, r, c, src, bf, true);
          }
      long long orderMatters = 0;
      for (long long k = 0; k < n; k++) orderMatters += expected[k] != sequential[k];
      printf("exact %dx%d rank %d %s %s: sequential order differs on %lld of %lld\n", s.rows, s.cols, s.rank, bf ? "bf16" : "fp16",
             adversarial ? "adversarial" : "realistic", orderMatters, n);
      for (Variant& v : variants) {
        CK(cudaMemset(p.out, 0x55, n * 2));
        (bf ? v.bf16 : v.f16)(p, p.out);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got.data(), p.out, n * 2, cudaMemcpyDeviceToHost));
        long long bad = 0;
        for (long long k = 0; k < n; k++) bad += got[k] != expected[k];
        if (bad) { failures++; printf("  FAIL %s: %lld differ\n", v.name, bad); }
      }
      release(p);
    }
  }
  // 2. Speed on SDXL's attention weights at rank 32, bytes against the library's tiling.
  struct Big { int rows, cols, count; } sdxl[] = {{10240, 1280, 60}, {1280, 1280, 372}, {1280, 2048, 120}, {1280, 5120, 60}, {5120, 640, 10}, {640, 2048, 20}, {640, 2560, 10}, {640, 640, 70}};
  for (int bf = 0; bf < 2; bf++) {
    std::vector<std::vector<float>> times(kVariants, std::vector<float>(runs, 0));
    std::vector<unsigned long long> bad(kVariants, 0);
    for (Big b : sdxl) {
      Problem p = make(b.rows, b.cols, 32, b.count, false, 7 + b.rows + b.cols, bf);
      long long n = (long long) p.count * p.rows * p.cols;
      uint16_t* reference; CK(cudaMalloc(&reference, n * 2));
      (bf ? variants[0].bf16 : variants[0].f16)(p, reference);
      CK(cudaDeviceSynchronize());
      cudaEvent_t start, stop; cudaEventCreate(&start); cudaEventCreate(&stop);
      for (int v = 0; v < kVariants; v++) {
        Runner f = bf ? variants[v].bf16 : variants[v].f16;
        f(p, p.out);
        CK(cudaDeviceSynchronize());
        bad[v] += differs(p.out, reference, n);
        for (int r = 0; r < runs; r++) {
          cudaEventRecord(start);
          f(p, p.out);
          cudaEventRecord(stop);
          cudaEventSynchronize(stop);
          float ms; cudaEventElapsedTime(&ms, start, stop);
          times[v][r] += ms;
        }
      }
      cudaFree(reference);
      release(p);
    }
    printf("SDXL attention weights, rank 32, %s, %d runs (median ms per fuse; elements differing from the first tiling)\n", bf ? "bf16" : "fp16", runs);
    for (int v = 0; v < kVariants; v++) {
      std::vector<float> t = times[v]; std::sort(t.begin(), t.end());
      printf("  %-36s %8.2f ms  min %8.2f  differ %llu\n", variants[v].name, t[runs / 2], t[0], bad[v]);
      if (bad[v]) failures++;
    }
  }
  printf(failures ? "FAILURES %d\n" : "ALL EXACT\n", failures);
  return failures ? 1 : 0;
}

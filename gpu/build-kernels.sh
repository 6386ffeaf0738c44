#!/usr/bin/env bash
# Builds libloramerge_cuda.so (kernels/loramerge_cuda.cu), the fuse's one-pass rounding kernel, with
# nvcc; the JVM loads it when -Dloramerge.cuda.kernels=PATH names it (see CudaKernels). Needs only
# the CUDA toolkit and JNI headers: no libtorch headers, the CUDA runtime linked statically.
#
# Usage: gpu/build-kernels.sh OUTPUT_DIR
# Env:   NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), JNI_INCLUDE (default: the
#        jdk-include/ beside this script, as prepare.sh writes it, else $JAVA_HOME/include),
#        CUDA_ARCH (default: native, the GPU of this machine; e.g. "sm_80" or "all-major"),
#        NVCC_FLAGS (more nvcc options, e.g. --pre-include of a header that defines
#        LORAMERGE_PRODUCT_TILING, as device-run.sh's tilings stage writes one)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: build-kernels.sh OUTPUT_DIR}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
JNI_INCLUDE="${JNI_INCLUDE:-$([ -d "$HERE/jdk-include" ] && echo "$HERE/jdk-include" || echo "${JAVA_HOME:?set JAVA_HOME or JNI_INCLUDE}/include")}"
mkdir -p "$OUT"
"$NVCC" -O3 -std=c++17 -shared -Xcompiler -fPIC -arch="${CUDA_ARCH:-native}" -cudart static ${NVCC_FLAGS:-} \
  -I"$JNI_INCLUDE" -I"$JNI_INCLUDE/linux" -o "$OUT/libloramerge_cuda.so" "$HERE/kernels/loramerge_cuda.cu"
echo "built $OUT/libloramerge_cuda.so with $("$NVCC" --version | tail -1) for ${CUDA_ARCH:-native} ${NVCC_FLAGS:-}"

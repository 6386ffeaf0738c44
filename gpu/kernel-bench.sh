#!/usr/bin/env bash
# Builds and runs the kernels' own benches on a GPU machine (device-run.sh's kbench stage):
# kernels/fuse_product_bench.cu, then kernels/ordered_product_bench.cu, with cuBLAS beside it where
# its headers and library are found (the CUDA toolkit's, else the torch wheel's nvidia packages).
# Each exits 1 when a tiling's bytes differ from the host's.
#
# Usage: gpu/kernel-bench.sh BUILD_DIR [RUNS]
# Env:   NVCC (default: nvcc on PATH), JNI_INCLUDE (default: jdk-include/ beside this script, as
#        prepare.sh writes it, else $JAVA_HOME/include), CUDA_ARCH (default: native)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="${1:?usage: kernel-bench.sh BUILD_DIR [RUNS]}"
RUNS="${2:-5}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
JNI_INCLUDE="${JNI_INCLUDE:-$([ -d "$HERE/jdk-include" ] && echo "$HERE/jdk-include" || echo "${JAVA_HOME:?set JAVA_HOME or JNI_INCLUDE}/include")}"
# The host's references must not be contracted into fused multiply-adds where they have none.
NV=("$NVCC" -O3 -std=c++17 -fmad=false -Xcompiler -ffp-contract=off -arch="${CUDA_ARCH:-native}" -I"$JNI_INCLUDE" -I"$JNI_INCLUDE/linux")
mkdir -p "$BUILD"
WHEELS="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia"))' 2>/dev/null || true)"
HEADER="$(ls /usr/local/cuda/include/cublas_v2.h "$WHEELS"/*/include/cublas_v2.h "$WHEELS"/*/*/include/cublas_v2.h 2>/dev/null | head -1 || true)"
LIBRARY="$(ls /usr/local/cuda/lib64/libcublas.so "$WHEELS"/*/lib/libcublas.so.* "$WHEELS"/*/*/lib/libcublas.so.* 2>/dev/null | head -1 || true)"
CUBLAS=()
if [ -n "$HEADER" ] && [ -n "$LIBRARY" ]; then
  # nvcc takes no versioned library (the wheel has only libcublas.so.13) as an input file: it is
  # linked by name from a folder of its own, after the objects (-l), as the host linker needs.
  mkdir -p "$BUILD/cublas" && ln -sf "$LIBRARY" "$BUILD/cublas/libcublas.so"
  CUBLAS=(-DWITH_CUBLAS -I"$(dirname "$HEADER")" -L"$BUILD/cublas" -lcublas -Xlinker -rpath -Xlinker "$(dirname "$LIBRARY")")
fi
echo "cuBLAS: ${LIBRARY:-not found}"
# Each bench is built and run whatever became of the other.
status=0
"${NV[@]}" -o "$BUILD/fuse-product-bench" "$HERE/kernels/fuse_product_bench.cu" &&
  "$BUILD/fuse-product-bench" "$RUNS" || status=1
"${NV[@]}" -o "$BUILD/ordered-product-bench" "$HERE/kernels/ordered_product_bench.cu" "${CUBLAS[@]}" &&
  "$BUILD/ordered-product-bench" "$RUNS" || status=1
exit $status

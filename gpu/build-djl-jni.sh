#!/usr/bin/env bash
# Builds DJL 0.35.1's PyTorch JNI library, libdjl_torch.so, from the sources in djl-native/ with
# patches/*.patch applied, against the libtorch of this machine's python3 torch (a CUDA build:
# USE_CUDA is defined, as DJL's build.sh does for its cu* flavors). Runs on the GPU machine, which
# has torch, cmake, ninja, g++ and nvcc but no JDK (the JNI headers come from jdk-include/).
#
# Usage: build-djl-jni.sh OUTPUT_DIR
# Reads beside this script: djl-native/ (see ../NOTICE in the repository), patches/*.patch
#   (applied in name order with `patch -p1` inside a copy of djl-native), jdk-include/ (a JDK's
#   include folder: jni.h, linux/jni_md.h; prepare.sh copies it).
# Env: PYTHON (python3), JOBS (nproc), BUILD_ROOT (/tmp/djl-jni-build),
#   TORCH_CUDA_ARCH_LIST (9.0: spares torch's CMake config the GPU probe; no CUDA code is compiled),
#   DJL_CXX / DJL_CC: the compilers (default /usr/bin/g++ and /usr/bin/gcc where they exist).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:?give the output folder}"
PY="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
ROOT="${BUILD_ROOT:-/tmp/djl-jni-build}"
SRC="$ROOT/src"
BLD="$ROOT/build"
export PATH="$PATH:$(dirname "$(command -v "$PY")")"   # cmake and ninja of the torch venv, if any
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
# The H200 image sets CXX to a wrapper whose links take libstdc++ statically (the library then
# exports ~2700 libstdc++ symbols); DJL's own libdjl_torch.so, like libtorch, uses the shared one.
if [ -n "${DJL_CXX:-}" ]; then
  export CXX="$DJL_CXX"; [ -n "${DJL_CC:-}" ] && export CC="$DJL_CC"
elif [ -x /usr/bin/g++ ] && [ -x /usr/bin/gcc ]; then
  export CXX=/usr/bin/g++ CC=/usr/bin/gcc
fi
CXX="${CXX:-g++}"

TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
echo "torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)') (cxx11 abi $("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))'))"
echo "cmake: $(command -v cmake) $(cmake --version | head -1); ninja: $(command -v ninja) $(ninja --version)"
echo "compiler: $CXX ($("$CXX" --version | head -1))"

rm -rf "$ROOT"
mkdir -p "$ROOT"
cp -r "$HERE/djl-native" "$SRC"
for p in "$HERE"/patches/*.patch; do
  [ -e "$p" ] || continue
  echo "applying $(basename "$p")"
  patch -d "$SRC" -p1 --forward < "$p"
done

NVCC="$(command -v nvcc || true)"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
CUDA_ARGS=()
if [ -n "$NVCC" ]; then
  CUDA_ROOT="$(dirname "$(dirname "$(readlink -f "$NVCC")")")"
  echo "nvcc: $NVCC ($("$NVCC" --version | tail -1)), toolkit root $CUDA_ROOT"
  CUDA_ARGS=(-DCUDAToolkit_ROOT="$CUDA_ROOT" -DCMAKE_CUDA_COMPILER="$NVCC")
fi

# AWT and libjvm are not linked (DJL's CMakeLists says so too): placeholders satisfy FindJNI.
cmake -S "$SRC" -B "$BLD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DUSE_CUDA=1 \
  -DJAVA_INCLUDE_PATH="$HERE/jdk-include" -DJAVA_INCLUDE_PATH2="$HERE/jdk-include/linux" \
  -DJAVA_AWT_INCLUDE_PATH=NotNeeded -DJAVA_AWT_LIBRARY=NotNeeded -DJAVA_JVM_LIBRARY=NotNeeded \
  -DUTILS_INCLUDE_DIR="$SRC/api-native" "${CUDA_ARGS[@]}"
# -k 0: every failing file at once
ninja -C "$BLD" -j "$JOBS" -k 0
mkdir -p "$OUT_DIR"
cp "$BLD/libdjl_torch.so" "$OUT_DIR/libdjl_torch.so"
echo "built $OUT_DIR/libdjl_torch.so ($(stat -c %s "$OUT_DIR/libdjl_torch.so") bytes)"
readelf -d "$OUT_DIR/libdjl_torch.so" | grep -E 'NEEDED|RPATH|RUNPATH' || true

#!/usr/bin/env bash
# Runs on the GPU machine (python3 torch + PEFT, CUDA, no Java, no network), from the folder
# gpu/prepare.sh wrote (target/gpu, carried with the checkout). Usage:
#
#   bash target/gpu/device-run.sh [STAGES...]      (default: env build check e2e)
#
# Stages, in this order whatever order they are named in:
#   env     GPU, driver, torch, PEFT and tools
#   build   libdjl_torch.so from djl-native + patches (build-djl-jni.sh); skipped when a build of
#           the same sources and patches for the same torch is kept (target/gpu-jni; REBUILD=1 forces);
#           and libloramerge_cuda.so from kernels/ (build-kernels.sh), which the Java stages load
#           unless KERNELS=0 (then the fuse takes libtorch's operations only)
#   kbench  the kernels' own benches, built with nvcc: kernels/ordered_product_bench.cu (the
#           randomized SVD's ordered products per tiling, bytes against the host's chains, times
#           on the SDXL ties_svd shapes beside cuBLAS's where its headers are found) and
#           kernels/fuse_product_bench.cu (the fp16/bf16 fuse product's tilings)
#   check   bin/lora-bench check --device gpu --require-bf16: fused bytes on the GPU == on the CPU
#           for F32/F16/BF16 on random Linear and Conv2d shapes, and bf16 tensors not aborting
#   e2e     bin/lora-bench device --device gpu --skip-merge: fuse/unfuse/memory, the hot-swap
#           cycles, CPU-vs-GPU bytes of the SDXL attention workload
#   tilings for each of TILINGS (e.g. "16,8,4,4,32 32,8,4,4,16": fuseProduct's threads across and
#           down, rows and columns each, rank chunk; see Tiling in kernels/loramerge_cuda.cu) the
#           kernels built with it, then check and e2e run with them (check-<tiling>, e2e-<tiling>:
#           logs and JSON, the tiling's commas written as x)
#   merge   bin/lora-bench device --device gpu --skip-fuse --skip-bytes: every merge method
#   peft    peft_gpu.py: PEFT 0.21 merge_adapter/unmerge_adapter, a plain torch loop and
#           add_weighted_adapter on the same shapes, on the same GPU
#   jmh     FuseKernel, SvdKernel.randomized and MergeKernel.merge with -p device=gpu (short runs)
#   ratios  ratios.py over the JSON of e2e, the tilings' e2e, merge and peft (this call's or an
#           earlier call's on the same machine)
#
# Every stage writes a log and JSON to $OUT (what comes back) and to target/gpu-results (kept on a
# warm machine between calls). A stage gets at most what is left of DEADLINE seconds (570: one
# call of the run tool is 600 s at most); the Java and Python programs are told their share and
# report what they finished. Env: DEADLINE, REBUILD=1, CYCLES (hot-swap cycles, 1000), HOTSWAP_S
# (at most 200 s of them, leaving the byte comparisons their time), RUNS (3),
# MERGE_RUNS (2), JAVA_HEAP (48g; committed and touched at start unless PRETOUCH=0), JAVA_OPTS (more JVM options, e.g. -Dloramerge.device.batchElements=N), BENCH_ARGS / PEFT_ARGS (appended to the Java bench's and
# peft_gpu.py's options, e.g. "--modules 40"). To dry-run the stages' plumbing on a machine without
# a GPU: DEVICE=cpu, DJL_JNI_SO (a JNI library to use instead of a build) and TORCH_LIB,
# TORCH_LIB_VERSION, TORCH_LIB_FLAVOR (the libtorch it was built for, e.g. DJL's CPU 2.7.1).
set -u
G="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-/tmp/gpu-out}"
RESULTS="$(dirname "$G")/gpu-results"
JNI_CACHE="$(dirname "$G")/gpu-jni"
mkdir -p "$OUT" "$RESULTS"
STAGES=" ${*:-env build check e2e} "
DEADLINE="${DEADLINE:-570}"
FAILED=()
has() { [[ "$STAGES" == *" $1 "* ]]; }
say() { echo "=== $* [$(date -u +%T), ${SECONDS}s]"; }
# The seconds a stage may take: at most $1, and what is left of the deadline less 10 s.
budget() { local left=$((DEADLINE - SECONDS - 10)); echo $((left < $1 ? left : $1)); }
# Runs a stage's command under its budget ($2 s, skipped under $3 s), logging to $OUT/$1.log.
stage() {
  local name="$1" most="$2" least="$3"; shift 3
  local limit; limit=$(budget "$most")
  if [ "$limit" -lt "$least" ]; then say "$name skipped: ${limit}s left, needs $least"; FAILED+=("$name:skipped"); return 1; fi
  say "$name (limit ${limit}s)"
  # The programs stop starting work 20 s before the stage's limit (--deadline-s @DEADLINE_S@).
  timeout -k 10 "$limit" "${@//@DEADLINE_S@/$((limit > 40 ? limit - 20 : 20))}" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -e '^\s*at ' -e ' INFO ' -e 'incubator modules' "$OUT/$name.log" | tail -60
  echo "$name exit $rc$([ $rc = 124 ] && echo ' (timed out)')"
  cp "$OUT/$name.log" "$RESULTS/" 2>/dev/null
  [ $rc = 0 ] || FAILED+=("$name:$rc")
  return $rc
}
keep() { for f in "$@"; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$RESULTS/"; done; }

TORCH_DIR="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
TORCH_VER="${TORCH_LIB_VERSION:-$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')}"
CUDA_TAG="${TORCH_LIB_FLAVOR:-$(python3 -c 'import torch; print("cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu")')}"
DEVICE="${DEVICE:-gpu}"

if has env; then
  say env
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  python3 -c 'import peft; print("peft", peft.__version__)'
  echo "nproc $(nproc); memory $(free -g | awk '/Mem/ {print $2}') GiB; tools: $(for t in patch readelf nvcc cmake ninja g++ xz; do printf '%s=%s ' $t "$(command -v $t || echo none)"; done)"
fi

# The JNI library: kept per sources + patches + torch, so a warm machine builds it once.
STAMP="$( (cd "$G" && find djl-native patches -type f | sort | xargs sha256sum; echo "$TORCH_VER $CUDA_TAG") | sha256sum | cut -c1-16)"
SO="${DJL_JNI_SO:-$JNI_CACHE/$STAMP/libdjl_torch.so}"
if has build && { [ ! -f "$SO" ] || [ "${REBUILD:-0}" = 1 ]; } && [ -z "${DJL_JNI_SO:-}" ]; then
  stage build 300 60 bash "$G/build-djl-jni.sh" "$JNI_CACHE/$STAMP"
  grep -E 'error|FAILED|applying|built |NEEDED|RUNPATH' "$OUT/build.log" | head -30
fi
# What was built comes back, for DJL_JNI_SO in later calls (a library given there is not sent back).
[ -f "$SO" ] && [ -z "${DJL_JNI_SO:-}" ] && xz -9 -T0 -c "$SO" > "$OUT/libdjl_torch.so.xz"
KSTAMP="$( (cd "$G" && sha256sum kernels/* build-kernels.sh) | sha256sum | cut -c1-16)"
KSO="$JNI_CACHE/kernels-$KSTAMP/libloramerge_cuda.so"
if has build && { [ ! -f "$KSO" ] || [ "${REBUILD:-0}" = 1 ]; } && [ "$DEVICE" = gpu ]; then
  stage kernels 120 20 bash "$G/build-kernels.sh" "$(dirname "$KSO")"
fi
if has kbench && [ "$DEVICE" = gpu ]; then
  stage kbench "${KBENCH_S:-240}" 30 bash "$G/kernel-bench.sh" "$JNI_CACHE/kbench-$KSTAMP" "${KBENCH_RUNS:-5}"
fi
JAVA_STAGES=(check e2e tilings merge jmh)
needs_java=0; for s in "${JAVA_STAGES[@]}"; do has "$s" && needs_java=1; done
if [ "$needs_java" = 1 ] && [ ! -f "$SO" ]; then
  say "no libdjl_torch.so (run the build stage): the Java stages are skipped"; FAILED+=("java:no-jni"); needs_java=0
fi

if [ "$needs_java" = 1 ]; then
  # DJL: libtorch from the python wheel (PYTORCH_LIBRARY_PATH; pytorch-native-cpu is not on the
  # class path, so DJL neither extracts nor downloads one), the JNI library in DJL's cache folder
  # where LibUtils looks for <cache>/pytorch/<version>-<flavor>-linux-x86_64/0.35.1-libdjl_torch.so.
  [ -x /tmp/loramerge-jre/jre/bin/java ] || { mkdir -p /tmp/loramerge-jre && tar -xJf "$G/jre.tar.xz" -C /tmp/loramerge-jre; }
  export PYTORCH_LIBRARY_PATH="${TORCH_LIB:-$TORCH_DIR/lib}" PYTORCH_VERSION="$TORCH_VER" PYTORCH_FLAVOR="$CUDA_TAG"
  export DJL_CACHE_DIR=/tmp/djl-cache
  JNI_DIR="$DJL_CACHE_DIR/pytorch/$TORCH_VER-$CUDA_TAG-linux-x86_64"
  mkdir -p "$JNI_DIR" && cp "$SO" "$JNI_DIR/0.35.1-libdjl_torch.so"
  # DJL's CudaUtils (Engine.getGpuCount) opens "libcudart.so" through JNA; the wheel has only libcudart.so.13.
  CUDART="$(ls "$TORCH_DIR"/../nvidia/*/lib/libcudart.so.* "$TORCH_DIR"/../nvidia/*/*/lib/libcudart.so.* /usr/local/cuda/lib64/libcudart.so.* 2>/dev/null | head -1)"
  mkdir -p /tmp/cudart && ln -sf "$CUDART" /tmp/cudart/libcudart.so
  KERNEL_OPT=()
  [ "${KERNELS:-1}" = 1 ] && [ -f "$KSO" ] && KERNEL_OPT=("-Dloramerge.cuda.kernels=$KSO")
  # The java command with the kernel options given ($@, none for libtorch's path), into JAVA_WITH.
  java_with() { JAVA_WITH=(/tmp/loramerge-jre/jre/bin/java -Djna.library.path=/tmp/cudart -Dai.djl.offline=true --add-modules jdk.incubator.vector "$@" ${JAVA_OPTS:-}); }
  java_with "${KERNEL_OPT[@]}"
  JAVA=("${JAVA_WITH[@]}")
  # The heap committed and touched at start, and kept (as bin/lora-bench does): a heap that grows
  # during a timed run pays the kernel's first-touch page faults there, which 16 merge threads
  # allocating gigabytes (the svd methods' float64 scratch) contend on. PRETOUCH=0 leaves it growing.
  HEAP=("-Xmx${JAVA_HEAP:-48g}")
  [ "${PRETOUCH:-1}" = 1 ] && HEAP+=("-Xms${JAVA_HEAP:-48g}" -XX:+AlwaysPreTouch -XX:MaxHeapFreeRatio=100)
  BENCH_MAIN=("${HEAP[@]}" -XX:MaxDirectMemorySize=96g -cp "$G/lib/*" dev.loramerge.bench.BenchCommand)
  BENCH=("${JAVA[@]}" "${BENCH_MAIN[@]}")
  echo "java $(/tmp/loramerge-jre/jre/bin/java -version 2>&1 | head -1); JNI $SO; cudart $CUDART; kernels ${KERNEL_OPT[*]:-off}"
fi

# check and e2e with the bench command in the arguments; $1 names the logs and JSON.
check_with() {
  local name="$1"; shift
  stage "$name" 120 30 "$@" check --device "$DEVICE" --require-bf16 --modules 24 --json "$OUT/$name.json"
  keep "$name.json"
}
e2e_with() {
  local name="$1"; shift
  # The program writes its JSON as it goes.
  stage "$name" "${E2E_S:-560}" 60 "$@" device --device "$DEVICE" --skip-merge --runs "${RUNS:-3}" --cycles "${CYCLES:-1000}" \
    --hotswap-s "${HOTSWAP_S:-200}" --json "$OUT/$name.json" ${BENCH_ARGS:-} --deadline-s @DEADLINE_S@
  keep "$name.json"
}
if has check && [ "$needs_java" = 1 ]; then
  check_with check "${BENCH[@]}"
fi
if has e2e && [ "$needs_java" = 1 ]; then
  e2e_with e2e "${BENCH[@]}"
fi
if has tilings && [ "$needs_java" = 1 ]; then
  [ -n "${TILINGS:-}" ] || { say "tilings: TILINGS names none"; FAILED+=("tilings:none"); }
  for tiling in ${TILINGS:-}; do
    tag="${tiling//,/x}"
    built="$JNI_CACHE/kernels-$KSTAMP-$tag"
    mkdir -p "$built" && echo "#define LORAMERGE_PRODUCT_TILING $tiling" > "$built/tiling.h"
    NVCC_FLAGS="--pre-include $built/tiling.h" stage "kernels-$tag" 120 20 bash "$G/build-kernels.sh" "$built" || continue
    java_with "-Dloramerge.cuda.kernels=$built/libloramerge_cuda.so"
    check_with "check-$tag" "${JAVA_WITH[@]}" "${BENCH_MAIN[@]}"
    e2e_with "e2e-$tag" "${JAVA_WITH[@]}" "${BENCH_MAIN[@]}"
  done
fi
if has merge && [ "$needs_java" = 1 ]; then
  stage merge "${MERGE_S:-560}" 60 "${BENCH[@]}" device --device "$DEVICE" --skip-fuse --skip-bytes --runs "${MERGE_RUNS:-2}" \
    --json "$OUT/merge.json" ${BENCH_ARGS:-} --deadline-s @DEADLINE_S@
  keep merge.json
fi
if has peft; then
  stage peft 400 60 python3 "$G/peft_gpu.py" --shapes "$G/sdxl_attention_shapes.txt" --json "$OUT/peft.json" \
    ${PEFT_ARGS:-} --deadline-s @DEADLINE_S@
  keep peft.json
fi
if has jmh && [ "$needs_java" = 1 ]; then
  stage jmh 300 60 "${JAVA[@]}" -cp "$G/lib/*" org.openjdk.jmh.Main 'FuseKernel|SvdKernel.randomized|MergeKernel.merge$' \
    -p device="$DEVICE" -p shape=640x2048,1280x10240 -p method=cat,svd,ties_svd -wi 2 -i 3 -w 1 -r 1 -f 1 -foe true \
    -rf json -rff "$OUT/jmh.json"
  keep jmh.json
fi
if has ratios; then
  stage ratios 30 5 python3 "$G/ratios.py" --results "$RESULTS" --json "$OUT/ratios.json"
  keep ratios.json
fi
say "done${FAILED[*]:+; not ok: ${FAILED[*]}}"
[ ${#FAILED[@]} = 0 ]

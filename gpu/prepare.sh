#!/usr/bin/env bash
# Prepares, on a machine with a JDK 17 and Maven, everything the GPU machine (no Java, no network)
# needs to build DJL's JNI library against its libtorch and run the project's benchmarks there.
#
# Usage: gpu/prepare.sh [OUTPUT_DIR]     (default: target/gpu of the checkout; about 31 MB)
# Env:   JAVA_HOME (default: the JDK of `javac` on PATH), MVN_ARGS (default: -B -o -q)
# Writes into OUTPUT_DIR (removed first):
#   jre.tar.xz            a jlink'ed Java runtime (the modules the jars need), xz-compressed
#   lib/                  benchmarks.jar and lora-bench's runtime class path, without
#                         pytorch-native-cpu (111 MB of CPU libtorch) and pytorch-jni (DJL's prebuilt
#                         JNI library, built for libtorch 2.7.1): build-djl-jni.sh makes the JNI
#                         library there, and DJL loads the machine's libtorch (PYTORCH_LIBRARY_PATH)
#   jdk-include/          this JDK's include/ (jni.h): the GPU machine has no JDK
#   djl-native/ patches/ kernels/ build-djl-jni.sh build-kernels.sh kernel-bench.sh device-run.sh ratios.py NOTICE   from gpu/
#   peft_gpu.py           from lora-bench/src/main/python
#   sdxl_attention_shapes.txt   `bin/lora-bench shapes`: what peft_gpu.py builds
# Then carry OUTPUT_DIR to the GPU machine and run `bash OUTPUT_DIR/device-run.sh STAGES` there
# (gpu/README.md).
set -euo pipefail
GPU="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$GPU")"
OUT="${1:-$ROOT/target/gpu}"
JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
JBIN="$JAVA_HOME/bin"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "1. the jars (mvn package of lora-bench and the modules it needs)"
# shellcheck disable=SC2086
(cd "$ROOT" && mvn ${MVN_ARGS:--B -o -q} package -DskipTests -pl lora-bench -am)
rm -rf "$OUT"
mkdir -p "$OUT/lib"
cp "$ROOT/lora-bench/target/benchmarks.jar" "$OUT/lib/"
find "$ROOT/lora-bench/target/lib" -name '*.jar' ! -name 'pytorch-native-cpu-*' ! -name 'pytorch-jni-*' -exec cp {} "$OUT/lib/" \;

echo "2. scripts, DJL's JNI sources and patches, JNI headers from $JAVA_HOME"
cp -r "$GPU/djl-native" "$GPU/patches" "$GPU/kernels" "$OUT/"
cp "$GPU/build-djl-jni.sh" "$GPU/build-kernels.sh" "$GPU/kernel-bench.sh" "$GPU/device-run.sh" "$GPU/ratios.py" "$GPU/NOTICE" "$ROOT/lora-bench/src/main/python/peft_gpu.py" "$OUT/"
cp -r "$JAVA_HOME/include" "$OUT/jdk-include"

echo "3. a Java runtime (jlink), xz-compressed"
# The modules are the union of jdeps --print-module-deps over the jars (jdeps fails on
# commons-compress and slf4j-simple, which need only java.base). jlink's own compression is off:
# xz packs the runtime to about a third of what --compress=2 gives. jdk.jfr: Flight Recorder, for
# profiles of the device runs (-XX:StartFlightRecording in JAVA_OPTS).
"$JBIN/jlink" --add-modules java.base,java.compiler,java.desktop,java.management,java.logging,jdk.unsupported,jdk.incubator.vector,jdk.jfr \
  --strip-debug --no-header-files --no-man-pages --compress=0 --output "$TMP/jre"
strip --strip-unneeded "$TMP/jre/lib/server/libjvm.so" 2>/dev/null || true
tar -cJf "$OUT/jre.tar.xz" -C "$TMP" jre

echo "4. the SDXL attention shapes for peft_gpu.py"
"$JBIN/java" -cp "$OUT/lib/*" dev.loramerge.bench.BenchCommand shapes > "$OUT/sdxl_attention_shapes.txt"

du -sh "$OUT"/{jre.tar.xz,lib,jdk-include,djl-native}
total=$(du -sb "$OUT" | cut -f1)
echo "$OUT: $((total / 1024 / 1024)) MiB, $(wc -l < "$OUT/sdxl_attention_shapes.txt") attention weights"
# The run tool carries the working tree and the carried folders, 64 MiB in all.
if [ "$total" -gt $((40 * 1024 * 1024)) ]; then
  echo "prepare.sh: $OUT is over 40 MiB; the working tree and it must stay under 64 MiB to be carried" >&2
  exit 1
fi

package dev.loramerge.bench;

import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The settings every JMH kernel here shares, which JMH reads from the superclass: average time in
 * milliseconds, 3 warm-up and 5 measured iterations of 2 s, one fork with DJL offline, room for
 * SDXL-sized tensors and the Vector API module, as {@code bin/lora fuse} and {@code bin/lora-bench}
 * run. A kernel's own annotation overrides its counterpart here. To time the scalar fusing path,
 * give {@code -jvmArgsAppend} without the module (the command line replaces this list).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(
    value = 1,
    jvmArgsAppend = {"-Dai.djl.offline=true", "-Xmx4g", "-XX:MaxDirectMemorySize=8g", "--add-modules", "jdk.incubator.vector"})
abstract class Kernel {}

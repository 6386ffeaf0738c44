/**
 * JMH benchmarks and the end-to-end harness. The only module to which lora-core's and
 * lora-algorithms' kernels are exported besides the library's own modules: the kernels measure
 * them on their own. The descriptor is for javac, which checks what lora-bench uses against it:
 * the benchmarks jar leaves it out and runs on the class path ({@code java -jar benchmarks.jar}).
 */
module dev.loramerge.bench {
  requires dev.loramerge.core;
  requires dev.loramerge.io;
  requires dev.loramerge.algorithms;
  // The device bench forwards the JVM's -D options to its bf16 probe, and reads DJL's GPU memory figures.
  requires java.management;
  // JMH has no Automatic-Module-Name: the name derived from its jar file.
  requires jmh.core;
}

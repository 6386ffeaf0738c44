/**
 * The LoRA model, architectures, the merge SPI and fusing.
 *
 * <p>The {@code dev.loramerge.internal.*} packages are implementation: each is exported only to
 * the loramerge modules that use it (qualified exports), so that javac and the JVM refuse them to
 * every other module. On the class path (the {@code lora} command, applications that do not use
 * the module path) this descriptor is ignored.
 */
module dev.loramerge.core {
  requires transitive ai.djl.api;
  requires transitive com.google.common;
  requires com.fasterxml.jackson.core;
  requires org.slf4j;
  // EJML has no Automatic-Module-Name: these are the names derived from its jar files.
  requires ejml.core;
  requires ejml.ddense;
  requires static com.google.errorprone.annotations;
  // Optional at run time: the Vector API kernels are loaded only when the module is in the boot
  // layer (--add-modules jdk.incubator.vector).
  requires static jdk.incubator.vector;

  exports dev.loramerge;
  exports dev.loramerge.analysis;
  exports dev.loramerge.arch;
  exports dev.loramerge.fuse;
  exports dev.loramerge.merge;
  exports dev.loramerge.merge.spi;
  exports dev.loramerge.synthetic;

  exports dev.loramerge.internal.fuse to dev.loramerge.io, dev.loramerge.bench;
  exports dev.loramerge.internal.json to dev.loramerge.io, dev.loramerge.bench;
  exports dev.loramerge.internal.linalg to dev.loramerge.bench;
  exports dev.loramerge.internal.numeric to dev.loramerge.algorithms;
  exports dev.loramerge.internal.select to dev.loramerge.algorithms, dev.loramerge.bench;
  // dev.loramerge.internal.arch is not exported at all.
}

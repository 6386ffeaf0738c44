/** Safetensors reading and writing; the PEFT, kohya and diffusers formats. */
module dev.loramerge.io {
  requires transitive dev.loramerge.core;
  requires com.fasterxml.jackson.core;
  requires org.slf4j;
  requires static com.google.errorprone.annotations;
  // com.sun.nio.file.ExtendedOpenOption (direct I/O), where the JDK has it.
  requires jdk.unsupported;

  exports dev.loramerge.io;
}

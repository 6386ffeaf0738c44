/** The lora command. */
module dev.loramerge.cli {
  requires dev.loramerge.core;
  requires dev.loramerge.io;
  requires dev.loramerge.algorithms;
  requires info.picocli;

  // picocli reads the commands' annotated fields and calls their methods reflectively.
  opens dev.loramerge.cli to info.picocli;
}

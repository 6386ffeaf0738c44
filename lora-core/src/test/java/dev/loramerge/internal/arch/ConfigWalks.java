package dev.loramerge.internal.arch;

import dev.loramerge.arch.ModuleSpec;
import java.io.IOException;
import java.util.List;

/** Runs the UNet walk on a config given as text, for tests of configs other than the bundled ones. */
public final class ConfigWalks {
  private ConfigWalks() {}

  /** The modules of the UNet {@code json} describes; its source is named "test config". */
  public static List<ModuleSpec> unet(String json) throws IOException {
    return UNetWalker.walk(ModelConfig.parse("test config", json));
  }
}

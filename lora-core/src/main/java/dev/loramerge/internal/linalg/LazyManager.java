package dev.loramerge.internal.linalg;

import ai.djl.ndarray.NDManager;
import java.util.function.Supplier;

/**
 * A manager made on first use (by one thread at a time) and closed with this, if made: merges and
 * fuses done on Java values never start the engine (about half a second).
 */
public final class LazyManager implements Supplier<NDManager>, AutoCloseable {
  private final Supplier<NDManager> factory;
  private NDManager manager;

  /** A manager {@code factory} makes when first asked for. */
  public LazyManager(Supplier<NDManager> factory) {
    this.factory = factory;
  }

  @Override
  public synchronized NDManager get() {
    if (manager == null) {
      manager = factory.get();
    }
    return manager;
  }

  @Override
  public synchronized void close() {
    if (manager != null) {
      manager.close();
    }
  }
}

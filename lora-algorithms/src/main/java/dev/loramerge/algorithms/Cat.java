package dev.loramerge.algorithms;

import com.google.common.collect.ImmutableMap;
import dev.loramerge.MergeAlgorithm;
import dev.loramerge.spi.ModuleMerge;
import dev.loramerge.spi.ModuleUpdate;

/**
 * PEFT's {@code cat}, the exact weighted sum Σ wᵢ·sᵢ·BᵢAᵢ as one adapter of rank Σ rᵢ (see
 * {@link MergeAlgorithm#cat()}, which this names for users who look for it here). Ranks may
 * differ.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Cat implements MergeAlgorithm {
  private static final Cat INSTANCE = new Cat();
  private static final MergeAlgorithm EXACT = MergeAlgorithm.cat();

  private Cat() {}

  /** The method (it has no parameters). */
  public static Cat of() {
    return INSTANCE;
  }

  @Override
  public String name() {
    return EXACT.name();
  }

  @Override
  public ImmutableMap<String, Object> parameters() {
    return EXACT.parameters();
  }

  @Override
  public ModuleUpdate merge(ModuleMerge module) {
    return EXACT.merge(module);
  }

  @Override
  public boolean exactInFloat64() {
    return true;
  }

  @Override
  public String toString() {
    return "Cat{}";
  }
}

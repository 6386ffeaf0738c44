package dev.loramerge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

import java.util.Comparator;

/**
 * The canonical name of a module a LoRA can target: a component and its diffusers module path,
 * written {@code unet.down_blocks.1.attentions.0.proj_in}.
 *
 * <p>Keys order by component, then by path with numeric segments compared as numbers, so that
 * {@code layers.2} sorts before {@code layers.10}.
 */
public record ModuleKey(Component component, String path) implements Comparable<ModuleKey> {
  private static final Comparator<ModuleKey> ORDER =
      Comparator.comparing(ModuleKey::component).thenComparing(ModuleKey::path, ModuleKey::comparePaths);

  /** Validates that the path is a non-empty dotted name. */
  public ModuleKey {
    checkNotNull(component, "component");
    checkNotNull(path, "path");
    checkArgument(
        !path.isEmpty() && !path.startsWith(".") && !path.endsWith(".") && !path.contains(".."),
        "not a module path: '%s'",
        path);
  }

  /** A key for {@code path} in {@code component}. */
  public static ModuleKey of(Component component, String path) {
    return new ModuleKey(component, path);
  }

  /**
   * Parses {@code unet.<path>}, {@code text_encoder.<path>} or {@code text_encoder_2.<path>}.
   *
   * @throws IllegalArgumentException when the text has no known component prefix
   */
  public static ModuleKey parse(String text) {
    int dot = text.indexOf('.');
    checkArgument(dot > 0, "not a module key (expected 'unet.<path>'): '%s'", text);
    Component component =
        Component.fromPrefix(text.substring(0, dot))
            .orElseThrow(
                () ->
                    new IllegalArgumentException(
                        "not a module key (expected unet, text_encoder or text_encoder_2): '"
                            + text
                            + "'"));
    return new ModuleKey(component, text.substring(dot + 1));
  }

  @Override
  public int compareTo(ModuleKey other) {
    return ORDER.compare(this, other);
  }

  /** {@code component.path}, the form {@link #parse} reads. */
  @Override
  public String toString() {
    return component.prefix() + "." + path;
  }

  private static int comparePaths(String left, String right) {
    String[] a = left.split("\\.", -1);
    String[] b = right.split("\\.", -1);
    for (int i = 0; i < Math.min(a.length, b.length); i++) {
      int order = compareSegments(a[i], b[i]);
      if (order != 0) {
        return order;
      }
    }
    return Integer.compare(a.length, b.length);
  }

  private static int compareSegments(String a, String b) {
    boolean numericA = isNumber(a);
    boolean numericB = isNumber(b);
    if (numericA && numericB) {
      int byLength = Integer.compare(a.length(), b.length());
      return byLength != 0 ? byLength : a.compareTo(b);
    }
    if (numericA != numericB) {
      return numericA ? -1 : 1;
    }
    return a.compareTo(b);
  }

  private static boolean isNumber(String segment) {
    if (segment.isEmpty() || (segment.length() > 1 && segment.charAt(0) == '0')) {
      return false;
    }
    for (int i = 0; i < segment.length(); i++) {
      if (segment.charAt(i) < '0' || segment.charAt(i) > '9') {
        return false;
      }
    }
    return true;
  }
}

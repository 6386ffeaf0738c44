package dev.loramerge;

import static com.google.common.base.Preconditions.checkArgument;
import static com.google.common.base.Preconditions.checkNotNull;

/**
 * The canonical name of a module a LoRA can target: a component and its diffusers module path,
 * written {@code unet.down_blocks.1.attentions.0.proj_in}.
 *
 * <p>Keys order by component, then by path with numeric segments compared as numbers, so that
 * {@code layers.2} sorts before {@code layers.10}.
 */
public record ModuleKey(Component component, String path) implements Comparable<ModuleKey> {
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
   * Parses {@code unet.<path>}, {@code text_encoder.<path>}, {@code text_encoder_2.<path>} or
   * {@code transformer.<path>}.
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
                        "not a module key (expected unet, text_encoder, text_encoder_2 or transformer): '"
                            + text
                            + "'"));
    return new ModuleKey(component, text.substring(dot + 1));
  }

  @Override
  public int compareTo(ModuleKey other) {
    int byComponent = component.compareTo(other.component);
    return byComponent != 0 ? byComponent : comparePaths(path, other.path);
  }

  /** {@code component.path}, the form {@link #parse} reads. */
  @Override
  public String toString() {
    return component.prefix() + "." + path;
  }

  /**
   * Compares dotted paths segment by segment, in place: sorted maps of modules compare keys on
   * every lookup, where splitting each path would allocate on every comparison. Keys looked up
   * among their neighbours share most of their path, so the segments before the first differing
   * character, equal in both, are skipped without being parsed.
   */
  private static int comparePaths(String left, String right) {
    int shorter = Math.min(left.length(), right.length());
    int first = 0;
    while (first < shorter && left.charAt(first) == right.charAt(first)) {
      first++;
    }
    if (first == left.length() && first == right.length()) {
      return 0;
    }
    int a = first == 0 ? 0 : left.lastIndexOf('.', first - 1) + 1;
    int b = a;
    while (true) {
      int endA = segmentEnd(left, a);
      int endB = segmentEnd(right, b);
      int order = compareSegments(left, a, endA, right, b, endB);
      if (order != 0) {
        return order;
      }
      boolean lastA = endA == left.length();
      boolean lastB = endB == right.length();
      if (lastA || lastB) {
        return Boolean.compare(!lastA, !lastB);
      }
      a = endA + 1;
      b = endB + 1;
    }
  }

  private static int segmentEnd(String path, int start) {
    int dot = path.indexOf('.', start);
    return dot < 0 ? path.length() : dot;
  }

  /** Numbers before words; numbers by value (no leading zeros, so by length first); words by text. */
  private static int compareSegments(String left, int a, int endA, String right, int b, int endB) {
    boolean numericA = isNumber(left, a, endA);
    boolean numericB = isNumber(right, b, endB);
    if (numericA != numericB) {
      return numericA ? -1 : 1;
    }
    if (numericA) {
      int byLength = Integer.compare(endA - a, endB - b);
      if (byLength != 0) {
        return byLength;
      }
    }
    int length = Math.min(endA - a, endB - b);
    for (int i = 0; i < length; i++) {
      int order = Character.compare(left.charAt(a + i), right.charAt(b + i));
      if (order != 0) {
        return order;
      }
    }
    return Integer.compare(endA - a, endB - b);
  }

  private static boolean isNumber(String path, int start, int end) {
    if (start == end || (end - start > 1 && path.charAt(start) == '0')) {
      return false;
    }
    for (int i = start; i < end; i++) {
      if (path.charAt(i) < '0' || path.charAt(i) > '9') {
        return false;
      }
    }
    return true;
  }
}

package dev.loramerge;

/**
 * Well-formed data that does not fit what was asked: an unknown module, a shape or rank
 * mismatch, an adapter for another architecture, a non-finite result.
 *
 * <p>The message names the module or tensor, what was found and what was expected, and where
 * there is one, how to fix it.
 */
public class LoraMergeException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** An exception with a complete, one-line message. */
  public LoraMergeException(String message) {
    super(message);
  }

  /** An exception with a complete, one-line message and the failure behind it. */
  public LoraMergeException(String message, Throwable cause) {
    super(message, cause);
  }
}

package dev.loramerge.internal.arch;

import java.util.Comparator;
import java.util.Locale;
import java.util.Optional;

/**
 * LoRA Block Weight ids, the block names of the sd-webui-lora-block-weight extension that
 * SuperMerger and kohya's {@code --lbws} share: {@code BASE} for the text encoders, {@code INnn}
 * for the UNet's input blocks, {@code M00} for its middle block and {@code OUTnn} for its output
 * blocks.
 *
 * <p>The UNet ids are the top-level block indices of the original (CompVis / sgm) UNet, so one
 * rule serves every architecture: {@code input_blocks.i} is {@code INii}, {@code middle_block}
 * is {@code M00}, {@code output_blocks.i} is {@code OUTii}. Modules outside those blocks ({@code
 * time_embed}, {@code label_emb}, {@code out}) get no id, because LBW's substring match on
 * original names gives them none and applies them at weight 1. (kohya's {@code --lbws} instead
 * puts {@code time_embed} / {@code label_emb} in IN00 and {@code out} past the last block, and
 * sd-mecha puts them in BASE / OUT08: the tools disagree, and LBW is the one users write weight
 * vectors for.)
 */
final class BlockIds {
  static final String TEXT_ENCODERS = "BASE";
  static final String MIDDLE = "M00";

  /** Flux's block ids, as its block-weight tools name them: {@code double_blocks.N}, {@code single_blocks.N}. */
  static final String DOUBLE_BLOCKS = "double_blocks.";

  static final String SINGLE_BLOCKS = "single_blocks.";

  /** SD3's block ids: {@code joint_blocks.N}. */
  static final String JOINT_BLOCKS = "joint_blocks.";

  private static final String INPUT_PREFIX = "input_blocks.";
  private static final String OUTPUT_PREFIX = "output_blocks.";

  /**
   * BASE, then IN, M and OUT ids, each group by number: the order LBW weight vectors use; for Flux
   * BASE, then double and single blocks by number.
   */
  static final Comparator<String> ORDER =
      Comparator.comparingInt(BlockIds::group).thenComparingInt(BlockIds::number);

  private BlockIds() {}

  /** The id of the UNet module at {@code originalPath}, if it lies in a numbered block. */
  static Optional<String> ofOriginalPath(String originalPath) {
    if (originalPath.startsWith(INPUT_PREFIX)) {
      return Optional.of(id("IN", index(originalPath, INPUT_PREFIX)));
    }
    if (originalPath.startsWith(OUTPUT_PREFIX)) {
      return Optional.of(id("OUT", index(originalPath, OUTPUT_PREFIX)));
    }
    if (originalPath.startsWith("middle_block.")) {
      return Optional.of(MIDDLE);
    }
    return Optional.empty();
  }

  private static int index(String path, String prefix) {
    int end = path.indexOf('.', prefix.length());
    return Integer.parseInt(path.substring(prefix.length(), end < 0 ? path.length() : end));
  }

  private static String id(String group, int index) {
    return String.format(Locale.ROOT, "%s%02d", group, index);
  }

  private static int group(String id) {
    if (id.equals(TEXT_ENCODERS)) {
      return 0;
    }
    if (id.startsWith("IN")) {
      return 1;
    }
    if (id.startsWith("M")) {
      return 2;
    }
    if (id.startsWith("OUT")) {
      return 3;
    }
    if (id.startsWith(DOUBLE_BLOCKS)) {
      return 4;
    }
    if (id.startsWith(SINGLE_BLOCKS)) {
      return 5;
    }
    if (id.startsWith(JOINT_BLOCKS)) {
      return 6;
    }
    throw new IllegalArgumentException("not a block id: '" + id + "'");
  }

  private static int number(String id) {
    int digits = id.length();
    while (digits > 0 && Character.isDigit(id.charAt(digits - 1))) {
      digits--;
    }
    return digits == id.length() ? 0 : Integer.parseInt(id.substring(digits));
  }
}

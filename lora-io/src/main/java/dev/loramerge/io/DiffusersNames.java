package dev.loramerge.io;

import com.google.common.base.Joiner;
import com.google.common.collect.ImmutableSet;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * Turns an underscored module name ({@code down_blocks_0_attentions_0_proj_in}) back into its
 * diffusers path ({@code down_blocks.0.attentions.0.proj_in}) by the grammar of diffusers and
 * transformers module names, never by guessing where the dots were.
 *
 * <p>The name is split at underscores and read left to right: a run of digits is an index, and
 * otherwise the longest run of tokens that spells a known module name ({@code conv_shortcut},
 * {@code to_out}, {@code time_emb_proj}, …) is one path segment. A token that starts no known
 * name makes the whole name unresolvable, which callers report by name.
 */
final class DiffusersNames {
  private static final ImmutableSet<String> SEGMENTS =
      ImmutableSet.of(
          // UNet structure
          "down_blocks", "up_blocks", "mid_block", "attentions", "resnets", "transformer_blocks",
          "downsamplers", "upsamplers", "conv", "conv_in", "conv_out", "time_embedding",
          "add_embedding", "linear_1", "linear_2", "conv_norm_out",
          // attention and feed-forward
          "attn1", "attn2", "to_q", "to_k", "to_v", "to_out", "ff", "net", "proj", "proj_in",
          "proj_out", "norm", "norm1", "norm2", "norm3", "add_q_proj", "add_k_proj",
          "add_v_proj", "to_add_out",
          // resnets
          "conv1", "conv2", "conv_shortcut", "time_emb_proj",
          // CLIP text encoders
          "text_model", "encoder", "layers", "self_attn", "q_proj", "k_proj", "v_proj",
          "out_proj", "mlp", "fc1", "fc2", "text_projection", "embeddings", "token_embedding",
          "position_embedding", "final_layer_norm", "layer_norm1", "layer_norm2");

  private static final int LONGEST_SEGMENT_TOKENS =
      SEGMENTS.stream().mapToInt(segment -> segment.split("_").length).max().orElse(1);

  private DiffusersNames() {}

  /** The dotted path spelled by {@code underscored}, if the grammar reads all of it. */
  static Optional<String> toPath(String underscored) {
    String[] tokens = underscored.split("_", -1);
    List<String> segments = new ArrayList<>();
    int position = 0;
    while (position < tokens.length) {
      String token = tokens[position];
      if (!token.isEmpty() && token.chars().allMatch(c -> c >= '0' && c <= '9')) {
        segments.add(token);
        position++;
        continue;
      }
      int consumed = longestSegmentAt(tokens, position);
      if (consumed == 0) {
        return Optional.empty();
      }
      segments.add(Joiner.on('_').join(List.of(tokens).subList(position, position + consumed)));
      position += consumed;
    }
    return Optional.of(Joiner.on('.').join(segments));
  }

  private static int longestSegmentAt(String[] tokens, int start) {
    for (int length = Math.min(LONGEST_SEGMENT_TOKENS, tokens.length - start); length > 0; length--) {
      String candidate = Joiner.on('_').join(List.of(tokens).subList(start, start + length));
      if (SEGMENTS.contains(candidate)) {
        return length;
      }
    }
    return 0;
  }
}

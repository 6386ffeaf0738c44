package dev.loramerge.merge;

import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import dev.loramerge.arch.BlockWeights;
import dev.loramerge.internal.json.Recipes;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/** The provenance a merger records in its outputs' metadata ({@link LoraMerger#RECIPE_KEY}). */
final class Recipe {
  private Recipe() {}

  /** The recipe of a merge, in the order its JSON lists the entries. */
  static Map<String, Object> of(
      MergeAlgorithm algorithm, ImmutableList<MergeInput> inputs, RankPolicy policy, Optional<PostPrune> prune,
      ImmutableMap<String, Object> extras) {
    Map<String, Object> recipe = new LinkedHashMap<>();
    recipe.put("algorithm", algorithm.name());
    recipe.put("parameters", algorithm.parameters());
    List<Object> adapters = new ArrayList<>();
    for (MergeInput input : inputs) {
      Map<String, Object> entry = new LinkedHashMap<>();
      entry.put("name", input.adapter().name());
      entry.put("weight", input.weight());
      if (input.blocks() != BlockWeights.uniform()) {
        entry.put("blocks", input.blocks().toString());
      }
      adapters.add(entry);
    }
    recipe.put("inputs", adapters);
    policy.rank().ifPresent(value -> recipe.put("rank", value));
    policy.convRank().ifPresent(value -> recipe.put("conv_rank", value));
    if (policy.rule().method() != RankRule.Method.FIXED) {
      recipe.put("rank_rule", policy.rule().toString());
    }
    policy.svdClamp().ifPresent(value -> recipe.put("svd_clamp", value));
    prune.ifPresent(value -> recipe.put("prune", value.toString()));
    recipe.putAll(extras);
    recipe.put("library", Recipes.libraryVersion());
    return Collections.unmodifiableMap(recipe);
  }
}

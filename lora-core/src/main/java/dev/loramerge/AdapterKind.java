package dev.loramerge;

/**
 * How a module's update ΔW is built from its tensors, as the trainers that write each kind define
 * it (LyCORIS {@code lycoris/modules} and {@code lycoris/functional}, and the loaders that read
 * them: ComfyUI {@code comfy/weight_adapter}, diffusers). Every kind's update is scaled by the
 * module's {@link LoraModule#scale()}; a DoRA magnitude ({@link DoraMagnitude}) is orthogonal to
 * the kind and renormalises {@code W + ΔW}. A {@link #REPLACEMENT} is no update: its tensor takes
 * the base weight's place.
 */
public enum AdapterKind {
  /** ΔW = s·B·A: LoRA and LoCon ({@code lora_down}, {@code lora_up}; PEFT {@code lora_A}/{@code lora_B}). */
  LORA("LoRA", true),
  /**
   * LoCon with a Tucker core: ΔW[o,i,·] = s·Σ up[o,p]·mid[p,q,·]·down[q,i], with {@code
   * lora_down} [r, in, 1, 1], {@code lora_mid} [r, r, kh, kw] and {@code lora_up} [out, r, 1, 1].
   * Its LoRA factors are exact: B = up and A = mid contracted with down.
   */
  LORA_TUCKER("LoCon (Tucker)", true),
  /** ΔW = s·(w1a·w1b) ⊙ (w2a·w2b) ({@code hada_w1_a} [out, r] … {@code hada_w2_b} [r, in·k·k]). */
  LOHA("LoHa", false),
  /**
   * LoHa with Tucker cores {@code hada_t1}, {@code hada_t2} [r, r, kh, kw] and {@code hada_w*_a}
   * [r, out], {@code hada_w*_b} [r, in]: each half rebuilt as the LoCon Tucker product.
   */
  LOHA_TUCKER("LoHa (Tucker)", false),
  /**
   * ΔW = s·(w1 ⊗ w2), the Kronecker product, with {@code w1} full ({@code lokr_w1}) or factored
   * ({@code lokr_w1_a}·{@code lokr_w1_b}) and {@code w2} full, factored, or Tucker ({@code lokr_t2});
   * the scale α/dim applies only where a factor is factored (dim is w2's rank, else w1's).
   */
  LOKR("LoKr", false),
  /** ΔW = {@code diff}, the full difference (LyCORIS {@code full}, ComfyUI {@code .diff}); scale 1. */
  FULL("full difference", false),
  /**
   * W' = {@code set_weight}: the tensor replaces the base weight whole, as BFL's Flux.1 control
   * LoRAs replace the attentions' norm scales (diffusers' {@code _load_norm_into_transformer} loads
   * them with {@code load_state_dict} in place of {@code norm_q.weight} …; ComfyUI's {@code
   * comfy/lora_convert.py} keys them {@code .scale.set_weight}, a {@code "set"} patch that {@code
   * comfy/lora.py} applies with {@code weight.copy_}). It is all or nothing: a weight w ≠ 0 (and
   * any block weight) replaces the base with the tensor unscaled, w = 0 leaves the base; it has
   * no ΔW, is never summed with another update, and cannot be subtracted.
   */
  REPLACEMENT("replacement", false);

  private final String displayName;
  private final boolean factored;

  AdapterKind(String displayName, boolean factored) {
    this.displayName = displayName;
    this.factored = factored;
  }

  /** The name trainers and UIs use, e.g. {@code "LoHa"}. */
  public String displayName() {
    return displayName;
  }

  /** Whether the update is exactly s·B·A with factors {@link LoraModule#down()} and {@link LoraModule#up()}. */
  public boolean factored() {
    return factored;
  }
}

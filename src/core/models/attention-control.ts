/**
 * A hook into the UNet's attention (Prompt-to-Prompt's cross-attention control): given the
 * attention probabilities of a layer — [B, H, rows, keys], a slice of query rows when attention
 * is sliced — it returns the probabilities the values are weighted with; after each scheduler
 * step it may change the latents (local blending, from the maps it kept). Off (absent) by
 * default; nothing is computed for it then.
 */
import type * as tf from '@tensorflow/tfjs';

/** Self-attention (attn1: keys are the image's own positions) or cross-attention (attn2: the prompt's tokens). */
export type AttentionKind = 'self' | 'cross';

/** Where in the UNet an attention map comes from. */
export interface AttentionSite {
  kind: AttentionKind;
  /** The attention's checkpoint key prefix, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2". */
  layer: string;
  /** The feature map the layer attends over: queries = height·width (the whole map, not the slice). */
  height: number;
  width: number;
  /** The first query row of `probs` (0 unless attention is sliced). */
  rowStart: number;
}

export interface AttentionControl {
  edit(probs: tf.Tensor, site: AttentionSite): tf.Tensor;
  /**
   * After each scheduler step, inside its tf.tidy: the latents [B, h, w, C] to go on with, made
   * from the stepped ones (Prompt-to-Prompt's local blending). Absent: the latents go on as stepped.
   */
  afterStep?(latents: tf.Tensor4D): tf.Tensor4D;
}

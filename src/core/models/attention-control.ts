/**
 * A hook into the UNet's attention (Prompt-to-Prompt's cross-attention control): given the
 * attention probabilities of a layer — [B, H, rows, keys], a slice of query rows when attention
 * is sliced — it returns the probabilities the values are weighted with. Off (absent) by default;
 * nothing is computed for it then.
 */
import type * as tf from '@tensorflow/tfjs';

/** Self-attention (attn1: keys are the image's own positions) or cross-attention (attn2: the prompt's tokens). */
export type AttentionKind = 'self' | 'cross';

export interface AttentionControl {
  /** `queries`: the layer's query positions (the whole map, not the slice). */
  edit(probs: tf.Tensor, kind: AttentionKind, queries: number): tf.Tensor;
}

/**
 * Prompts to text-encoder states, with AUTOMATIC1111's emphasis and prompts of any length.
 * Plain prompts that fit one chunk are encoded as StableDiffusionPipeline.encode_prompt does;
 * as soon as one prompt of a set is weighted or long, every prompt of the set takes the chunked
 * path (diffusers' lpw_stable_diffusion get_weighted_text_embeddings): each chunk of 75 tokens
 * is encoded on its own with BOS/EOS, the chunks are concatenated along the sequence, and all
 * prompts are padded to the same number of chunks, so a prompt and its negative share a batch.
 *
 * Emphasis, A1111's "Original" rule: E ← E·w per token, then E ← E·mean(E_before)/mean(E) so
 * the overall magnitude stays. 'lpw' takes the means over all chunks of a prompt, 'a1111' per
 * chunk (A1111 processes each chunk on its own).
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { clipTextForward } from '../models/clip-text.js';
import { modelPromptLength } from '../sizes.js';
import { expandPrompt } from '../embeddings.js';
import { encode } from '../tokenizer/clip-tokenizer.js';
import { hasEmphasis } from './attention.js';
import { padChunks, promptChunks, type EmphasisMode, type PromptChunks } from './chunks.js';

export interface PromptEncodingOptions {
  /** Use the text encoder's output this many layers before the last ("clip skip"). */
  clipSkip?: number;
  /** Token-embedding table to use instead of the model's (learned embeddings). */
  tokenEmbedding?: tf.Tensor;
  /** Learned rows appended at an offset (see ClipTextOptions.extraTokens). */
  extraTokens?: { offset: number; rows: tf.Tensor };
  /** Emphasis syntax and its rule (default 'lpw'); 'none' reads brackets literally. */
  emphasis?: EmphasisMode;
}

/**
 * Token ids as the pipeline feeds the text encoder for a plain prompt: multi-vector embedding
 * tokens expanded (maybe_convert_prompt), then padded and truncated to model_max_length.
 */
export function promptIdRows(model: StableDiffusion, prompts: readonly string[]): number[][] {
  const maxLength = modelPromptLength(model);
  return prompts.map((p) => encode(model.tokenizer, expandPrompt(p, model.tokenizer), { maxLength, padding: 'max_length', truncation: true }).ids);
}

/** Whether a prompt fits one chunk without emphasis, so the plain encoding applies. */
export function isPlainPrompt(model: StableDiffusion, prompt: string, mode: EmphasisMode = 'lpw'): boolean {
  if (mode !== 'none' && hasEmphasis(prompt)) return false;
  const e = encode(model.tokenizer, expandPrompt(prompt, model.tokenizer), { maxLength: modelPromptLength(model), padding: 'none', truncation: true });
  return !e.truncated;
}

/** Each prompt in chunks, all padded to the largest chunk count. */
export function chunkPrompts(model: StableDiffusion, prompts: readonly string[], mode: EmphasisMode): PromptChunks[] {
  const length = modelPromptLength(model);
  const chunks = prompts.map((p) => promptChunks(model.tokenizer, p, length, mode));
  const count = Math.max(...chunks.map((c) => c.ids.length));
  return chunks.map((c) => padChunks(model.tokenizer, c, count, length));
}

function textStates(model: StableDiffusion, rows: number[][], opts: PromptEncodingOptions): tf.Tensor3D {
  return clipTextForward(model.textEncoder.params, model.textEncoder.config, rows, {
    skipLastLayers: opts.clipSkip ?? 0,
    tokenEmbedding: opts.tokenEmbedding,
    extraTokens: opts.extraTokens,
  }).lastHiddenState;
}

/** E·w with the mean restored over `axes` of E [k, L, C] (all of it, or each chunk). */
function emphasize(states: tf.Tensor3D, weights: number[][], perChunk: boolean): tf.Tensor3D {
  const axes = perChunk ? [1, 2] : [0, 1, 2];
  const before = tf.mean(states, axes, true);
  const weighted = tf.mul(states, tf.tensor3d(weights.map((row) => row.map((w) => [w])), [weights.length, weights[0]!.length, 1]));
  return tf.mul(weighted, tf.div(before, tf.mean(weighted, axes, true))) as tf.Tensor3D;
}

/**
 * prompt_embeds for each prompt, [1, L·k, C] with the same k for all (k = 1 and the plain
 * encoding when every prompt is plain). The caller owns the tensors.
 */
export function encodePromptSet(model: StableDiffusion, prompts: readonly string[], opts: PromptEncodingOptions = {}): tf.Tensor3D[] {
  const mode = opts.emphasis ?? 'lpw';
  if (prompts.every((p) => isPlainPrompt(model, p, mode))) {
    return tf.tidy(() => tf.split(textStates(model, promptIdRows(model, prompts), opts), prompts.length, 0)) as tf.Tensor3D[];
  }
  const chunked = chunkPrompts(model, prompts, mode);
  return tf.tidy(() => {
    const states = textStates(model, chunked.flatMap((c) => c.ids), opts);
    const k = chunked[0]!.ids.length;
    const [, length, width] = states.shape;
    return tf.split(states, prompts.length, 0).map((s, i) => {
      const e = mode === 'none' ? s : emphasize(s as tf.Tensor3D, chunked[i]!.weights, mode === 'a1111');
      return e.reshape([1, k * length, width]) as tf.Tensor3D;
    });
  });
}

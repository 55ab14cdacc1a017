/**
 * Pivotal tuning (diffusers' advanced DreamBooth-LoRA script, --train_text_encoder_ti; kohya's
 * LoRA with bundled embeddings): a new token's embedding learnt together with the LoRA. The
 * embedding trains for the first `fraction` of the steps (the script's train_text_encoder_ti_frac)
 * at its own learning rate, then stays fixed while the LoRA goes on learning around it. The
 * new rows sit beside the frozen token table, as in Textual Inversion.
 */
import * as tf from '@tensorflow/tfjs';
import { multiVectorTokens, TOKEN_EMBEDDING_KEY } from '../core/embeddings.js';
import type { StableDiffusion } from '../core/model.js';
import { rowParts, rowsShape } from '../core/row-chunks.js';
import { addTokens, vocabSize } from '../core/tokenizer/clip-tokenizer.js';
import { PainterError } from '../errors.js';
import { checkPlaceholder, initVector } from './textual-inversion.js';

export interface PivotalSettings {
  token: string;
  vectors: number;
  /** The word the embedding starts from (default: the vocabulary's mean). */
  initToken?: string;
  /** Optimisation steps during which the embedding trains (the first ones). */
  steps: number;
  /** Its learning rate as a multiple of the LoRA's. */
  lrScale: number;
}

/** The checkpoint name of the embedding's variable. */
export const PIVOTAL_VAR = 'ti/embeddings';

export interface PivotalEmbedding {
  tokens: string[];
  rows: tf.Variable;
  /**
   * Call before building a step's loss (outside the gradient tape): from the embedding's last
   * step on, it takes a constant copy of the rows, so no gradient reaches them.
   */
  prepare(step: number): void;
  /** The rows as the text encoder takes them at optimisation step `step` (0-based): trainable, then fixed. */
  extraTokens(step?: number): { offset: number; rows: tf.Tensor };
  dispose(): void;
}

let created = 0;

/** Adds the token(s) to the model's tokenizer and makes the trainable rows. */
export function createPivotalEmbedding(model: StableDiffusion, s: PivotalSettings): PivotalEmbedding {
  const tokens = checkPlaceholder(model, s.token, s.vectors);
  const table = rowParts(model.textEncoder.params, TOKEN_EMBEDDING_KEY);
  const [tableRows] = rowsShape(table);
  const init = initVector(model, s.initToken, table, Math.min(tableRows, vocabSize(model.tokenizer)));
  const offset = addTokens(model.tokenizer, tokens)[0]!;
  if (offset > tableRows) throw new PainterError(`the tokenizer has ${offset} tokens but the text encoder only ${tableRows} embeddings; they do not belong together`);
  const rows = tf.variable(tf.tidy(() => tf.tile(init.reshape([1, -1]), [s.vectors, 1])), true, `pivotal${++created}_${Date.now()}`);
  init.dispose();
  // After its steps the embedding enters the text encoder as a constant copy: no gradient, no update.
  let fixed: tf.Tensor | undefined;
  return {
    tokens,
    rows,
    prepare(step) {
      if (step >= s.steps) fixed ??= rows.clone();
    },
    extraTokens(step) {
      if (step === undefined || step < s.steps) return { offset, rows };
      if (!fixed) throw new Error('pivotal embedding: prepare(step) was not called before the loss');
      return { offset, rows: fixed };
    },
    dispose() {
      rows.dispose();
      fixed?.dispose();
    },
  };
}

export { multiVectorTokens };

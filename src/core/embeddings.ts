/**
 * Textual Inversion embeddings applied to a loaded model exactly as diffusers'
 * `load_textual_inversion` does (v0.30.3):
 *
 *   1. a k-vector embedding for token T adds the tokens T, T_1, …, T_{k−1} (multi-vector);
 *   2. the token-embedding table is resized to len(tokenizer) + (new tokens) rows — which
 *      SHRINKS a table that has more rows than the tokenizer has tokens (transformers'
 *      resize_token_embeddings keeps rows [0, len(tokenizer)) and drops the rest);
 *   3. each new token gets id len(tokenizer) at the time it is added, and its row is the vector.
 *
 * Prompts then expand T to "T T_1 … T_{k−1}" before tokenization (`expandPrompt`, diffusers'
 * maybe_convert_prompt). The caller's model is not modified: the result shares every tensor
 * except the new table, which `dispose()` frees.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../errors.js';
import type { StableDiffusion } from './model.js';
import { chunkKey, deleteRows, meanRows, rowParts, rowsShape } from './row-chunks.js';
import { tensorByteLimit } from '../backend/webgpu.js';
import { addTokens, tokenId, tokenize, vocabSize, type ClipTokenizer } from './tokenizer/clip-tokenizer.js';

export const TOKEN_EMBEDDING_KEY = 'text_model.embeddings.token_embedding.weight';

/** One learned embedding: k vectors of the text encoder's width, triggered by `token`. */
export interface Embedding {
  token: string;
  /** Row-major [k, dim]. */
  vectors: Float32Array;
  shape: [number, number];
  /** Where it came from, for error messages. */
  file?: string;
}

export interface AppliedEmbedding {
  token: string;
  /** The tokenizer tokens it occupies: [token, token_1, …]. */
  tokens: string[];
  ids: number[];
  file?: string;
}

export interface EmbeddedModel {
  model: StableDiffusion;
  tokens: AppliedEmbedding[];
  /** Frees the tensors this call created (the new token-embedding table). */
  dispose(): void;
}

/**
 * Why a new placeholder token would misbehave, or undefined when it is fine. The tokenizer splits
 * added tokens out of the text before BPE, wherever they occur: a token that begins or ends with
 * a letter, digit or underscore ("cat", "sks", "cat-toy") would also match inside other words
 * ("catfish", "scattered", "bobcat-toy") and take them over. A token set off by symbols on both
 * ends ("<cat>", "[cat]", "<猫>") cannot.
 */
export function placeholderProblem(token: string): string | undefined {
  if (token === '' || /\s/u.test(token)) return 'give one word without spaces, e.g. "<cat>"';
  if (/^[\p{L}\p{N}_]|[\p{L}\p{N}_]$/u.test(token)) {
    const inner = token.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '') || token;
    return `a new token that begins or ends with a letter, digit or underscore would also take over every word that contains it (as "${inner}" in "${inner}s" or "my${inner}"); use a bracketed placeholder such as "<${inner}>"`;
  }
  return undefined;
}

/** Tokenizer tokens of a k-vector embedding: diffusers names the extra vectors `<t>_1 … <t>_{k−1}`. */
export function multiVectorTokens(token: string, count: number): string[] {
  return [token, ...Array.from({ length: count - 1 }, (_, i) => `${token}_${i + 1}`)];
}

/** A copy of a tokenizer that can take new tokens without changing the original. */
function forkTokenizer(tok: ClipTokenizer): ClipTokenizer {
  return { ...tok, addedDecoder: new Map(tok.addedDecoder), addedEncoder: new Map(tok.addedEncoder) };
}

function source(e: Embedding): string {
  return e.file ?? `embedding "${e.token}"`;
}

/**
 * Checks every embedding before anything changes (as diffusers validates before its "unsafe"
 * step): width equals the text encoder's hidden size, the token and its `_i` companions are new.
 */
function validate(model: StableDiffusion, embeddings: readonly Embedding[]): void {
  const width = model.textEncoder.config.hidden_size;
  const seen = new Map<string, string>();
  for (const e of embeddings) {
    const [count, dim] = e.shape;
    if (!Number.isInteger(count) || count < 1 || e.vectors.length !== count * dim) {
      throw new PainterError(`${source(e)}: embedding has shape [${e.shape.join(', ')}] but ${e.vectors.length} values`);
    }
    if (dim !== width) {
      throw new PainterError(
        `${source(e)}: embedding vectors are ${dim} wide but this model's text encoder is ${width} wide; the embedding was trained for another base model (SD 1.x uses 768, SD 2.x 1024)`,
      );
    }
    if (!e.token) throw new PainterError(`${source(e)}: empty token; give the embedding a trigger token`);
    for (const t of multiVectorTokens(e.token, count)) {
      if (tokenId(model.tokenizer, t) !== undefined) {
        throw new PainterError(`${source(e)}: token "${t}" is already in the tokenizer's vocabulary; choose another token for this embedding`);
      }
      const other = seen.get(t);
      if (other !== undefined) throw new PainterError(`${source(e)}: token "${t}" is also used by ${other}; give each embedding its own token`);
      seen.set(t, source(e));
    }
    // diffusers refuses a token whose "_1" companion exists, even for a single vector.
    if (tokenId(model.tokenizer, `${e.token}_1`) !== undefined) {
      throw new PainterError(`${source(e)}: token "${e.token}_1" is already in the tokenizer's vocabulary; choose another token for this embedding`);
    }
  }
}

/**
 * Adds the embeddings' tokens to (a copy of) the tokenizer and builds the new token-embedding
 * table; ids and rows follow diffusers, so prompts tokenize and encode as they do there.
 */
export function applyEmbeddings(model: StableDiffusion, embeddings: readonly Embedding[]): EmbeddedModel {
  validate(model, embeddings);
  const tokenizer = forkTokenizer(model.tokenizer);
  const before = vocabSize(model.tokenizer);
  const applied: AppliedEmbedding[] = embeddings.map((e) => {
    const tokens = multiVectorTokens(e.token, e.shape[0]);
    const out: AppliedEmbedding = { token: e.token, tokens, ids: addTokens(tokenizer, tokens) };
    if (e.file !== undefined) out.file = e.file;
    return out;
  });
  const added = applied.reduce((n, a) => n + a.tokens.length, 0);
  const old = rowParts(model.textEncoder.params, TOKEN_EMBEDDING_KEY);
  const [rows, dim] = rowsShape(old);
  // resize_token_embeddings(len(tokenizer) + added): rows [0, len(tokenizer)) survive.
  const kept = Math.min(rows, before);
  const newRows = tf.tidy(() => {
    const parts: tf.Tensor[] = [];
    // A table shorter than the tokenizer (unusual) is padded with the mean row, as painter's
    // resizeTokenEmbedding does; transformers draws those rows at random.
    if (before > rows) parts.push(tf.broadcastTo(meanRows(old, rows).reshape([1, dim]), [before - rows, dim]));
    for (const e of embeddings) parts.push(tf.tensor2d(e.vectors, e.shape, 'float32'));
    return parts.length === 0 ? tf.zeros([0, dim]) : parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
  });
  const params = new Map(model.textEncoder.params);
  deleteRows(params, TOKEN_EMBEDDING_KEY);
  const created: tf.Tensor[] = [];
  if (old.length === 1 && (kept + newRows.shape[0]!) * dim * 4 <= tensorByteLimit()) {
    // One tensor, as the table was.
    const table = tf.tidy(() => tf.concat([old[0]!.tensor.slice([0, 0], [kept, dim]), newRows], 0));
    newRows.dispose();
    params.set(TOKEN_EMBEDDING_KEY, table);
    created.push(table);
  } else {
    // Row chunks: the surviving parts are shared with the model, the new rows are one more chunk.
    for (const p of old) {
      const n = Math.min(p.tensor.shape[0]!, kept - p.start);
      if (n <= 0) continue;
      const t = n === p.tensor.shape[0] ? p.tensor : p.tensor.slice([0, 0], [n, dim]);
      if (t !== p.tensor) created.push(t);
      params.set(chunkKey(TOKEN_EMBEDDING_KEY, p.start), t);
    }
    if (newRows.shape[0]! > 0) params.set(chunkKey(TOKEN_EMBEDDING_KEY, kept), newRows);
    created.push(newRows);
  }
  return {
    model: {
      ...model,
      textEncoder: { config: { ...model.textEncoder.config, vocab_size: before + added }, params },
      tokenizer,
    },
    tokens: applied,
    dispose: () => tf.dispose(created),
  };
}

/**
 * diffusers' maybe_convert_prompt: every added token T of the tokenizer that occurs in the prompt
 * is replaced (as a plain substring, everywhere) by "T T_1 … T_{k−1}" when T_1 exists.
 */
export function expandPrompt(prompt: string, tokenizer: ClipTokenizer): string {
  let out = prompt;
  for (const token of new Set(tokenize(tokenizer, prompt))) {
    if (!tokenizer.addedEncoder.has(token)) continue;
    let replacement = token;
    for (let i = 1; tokenizer.addedEncoder.has(`${token}_${i}`); i++) replacement += ` ${token}_${i}`;
    if (replacement !== token) out = out.replaceAll(token, replacement);
  }
  return out;
}


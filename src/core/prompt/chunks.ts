/**
 * A weighted prompt laid out as the text encoder reads it: chunks of L − 2 tokens (75 for CLIP's
 * 77 positions), each framed by BOS … EOS, with one emphasis multiplier per position. Two
 * layouts, chosen by the emphasis mode:
 * - 'lpw' (default): diffusers' community long-prompt-weighting pipeline — the tokens run on
 *   from chunk to chunk, the last chunk is padded with the tokenizer's pad id.
 * - 'a1111': AUTOMATIC1111's — a chunk that fills up within 20 tokens of a comma is cut after
 *   the comma, the rest moving to the next chunk.
 * In both, `BREAK` closes the chunk in progress (padding it) and starts a new one.
 */
import type { ClipTokenizer } from '../tokenizer/clip-tokenizer.js';
import { encode, tokenId } from '../tokenizer/clip-tokenizer.js';
import { expandPrompt } from '../embeddings.js';
import { parsePromptAttention } from './attention.js';

/** How emphasis weights are applied (see encode.ts). */
export type EmphasisMode = 'lpw' | 'a1111' | 'none';

export const EMPHASIS_MODES: readonly EmphasisMode[] = ['lpw', 'a1111', 'none'];

/** AUTOMATIC1111's comma_padding_backtrack default: how far back a chunk split looks for a comma. */
const COMMA_BACKTRACK = 20;

export interface PromptChunks {
  /** Token ids per chunk, each L long: BOS, L − 2 tokens or pads, EOS. */
  ids: number[][];
  /** Emphasis multiplier per position, 1 on BOS/EOS/pads. */
  weights: number[][];
}

interface Piece {
  tokens: number[];
  weights: number[];
}

/** Ids of a text without BOS/EOS, multi-vector embedding tokens expanded. */
function textTokens(tokenizer: ClipTokenizer, text: string): number[] {
  if (text === '') return [];
  return encode(tokenizer, expandPrompt(text, tokenizer), { padding: 'none', truncation: false }).ids.slice(1, -1);
}

/**
 * A prompt's tokens in chunks of `length − 2`. In mode 'none' the prompt is read literally (no
 * emphasis, no BREAK). The result has at least one chunk.
 */
export function promptChunks(tokenizer: ClipTokenizer, prompt: string, length: number, mode: EmphasisMode): PromptChunks {
  const size = length - 2;
  const fragments = mode === 'none' ? [{ kind: 'text' as const, text: prompt, weight: 1 }] : parsePromptAttention(prompt);
  const comma = tokenId(tokenizer, ',</w>');
  const done: Piece[] = [];
  let current: Piece = { tokens: [], weights: [] };
  let lastComma = -1;
  const close = () => {
    done.push(current);
    current = { tokens: [], weights: [] };
    lastComma = -1;
  };
  for (const f of fragments) {
    if (f.kind === 'break') {
      close();
      continue;
    }
    for (const token of textTokens(tokenizer, f.text)) {
      if (mode === 'a1111') {
        if (token === comma) lastComma = current.tokens.length;
        else if (current.tokens.length === size && lastComma !== -1 && size - lastComma <= COMMA_BACKTRACK) {
          // Move what follows the last comma into the next chunk (A1111's comma_padding_backtrack).
          const cut = lastComma + 1;
          const moved = { tokens: current.tokens.slice(cut), weights: current.weights.slice(cut) };
          current.tokens.length = cut;
          current.weights.length = cut;
          close();
          current = moved;
        }
      }
      if (current.tokens.length === size) close();
      current.tokens.push(token);
      current.weights.push(f.weight);
    }
  }
  if (current.tokens.length > 0 || done.length === 0) close();
  return frame(tokenizer, done, size);
}

/** Pads every piece to `size` and frames it with BOS/EOS. */
function frame(tokenizer: ClipTokenizer, pieces: Piece[], size: number): PromptChunks {
  const ids: number[][] = [];
  const weights: number[][] = [];
  for (const p of pieces) {
    const pad = size - p.tokens.length;
    ids.push([tokenizer.bosTokenId, ...p.tokens, ...new Array<number>(pad).fill(tokenizer.padTokenId), tokenizer.eosTokenId]);
    weights.push([1, ...p.weights, ...new Array<number>(pad).fill(1), 1]);
  }
  return { ids, weights };
}

/** Chunks padded with empty ones (BOS, pads, EOS) to `count`, so prompts can share a batch. */
export function padChunks(tokenizer: ClipTokenizer, chunks: PromptChunks, count: number, length: number): PromptChunks {
  const missing = count - chunks.ids.length;
  if (missing <= 0) return chunks;
  const empty = frame(tokenizer, Array.from({ length: missing }, () => ({ tokens: [], weights: [] })), length - 2);
  return { ids: [...chunks.ids, ...empty.ids], weights: [...chunks.weights, ...empty.weights] };
}

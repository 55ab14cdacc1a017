/**
 * Trains a CLIP-compatible byte-level BPE vocabulary (vocab.json + merges.txt contents) from a
 * corpus, here painter-mini's captions, so that painter's CLIP tokenizer and transformers'
 * CLIPTokenizer load it unchanged.
 *
 * It follows CLIP's own scheme (openai/CLIP simple_tokenizer.py, transformers' CLIPTokenizer)
 * as the tokenizer consumes it:
 *   - words come from the tokenizer's own normalisation (BasicTokenizer fallback) and regex;
 *   - a word is its UTF-8 bytes mapped with bytes_to_unicode, the last symbol carrying `</w>`;
 *   - ids: the 256 byte symbols in bytes_to_unicode order, then the same 256 with `</w>`, then
 *     one token per merge in merge order, then `<|startoftext|>` and `<|endoftext|>`.
 * Merges are learnt greedily: the most frequent adjacent pair (counted over word occurrences)
 * is merged everywhere, left to right, exactly as the tokenizer's rank-ordered BPE replays it,
 * so every training word tokenizes to the segmentation training ended with.
 *
 * Pure and deterministic: ties in frequency go to the pair whose "first second" string sorts
 * first (UTF-16 code-unit order), and nothing depends on Map iteration order of the input.
 */
import { BYTE_ENCODER, CLIP_PATTERN, basicTokenize } from '../../src/index.js';

export const BOS_TOKEN = '<|startoftext|>';
export const EOS_TOKEN = '<|endoftext|>';
const END_OF_WORD = '</w>';
/** Base symbols: 256 bytes and their end-of-word forms. Specials: BOS and EOS. */
export const BASE_VOCAB_SIZE = 512;
const SPECIAL_COUNT = 2;
// CLIPTokenizer reads merges.txt lines [1, 49152 - 256 - 2 + 1): at most this many merges are seen.
const MAX_MERGES = 49152 - 256 - 2;

export interface BpeTrainOptions {
  /** Total vocabulary size including the 512 byte symbols and the 2 special tokens. */
  vocabSize: number;
  /**
   * A pair must occur at least this often (over word occurrences) to be merged. Default 2: a
   * string seen once in the corpus is not worth a token of its own.
   */
  minFrequency?: number;
}

export interface TrainedBpe {
  /** vocab.json: token -> id, ids 0..n-1 without gaps. */
  vocab: Record<string, number>;
  /** merges.txt lines after the "#version" header, "first second", in rank order. */
  merges: string[];
}

/** bytes_to_unicode's values in CLIP's vocabulary order: printable bytes, then the remapped ones. */
function baseSymbols(): string[] {
  // printable bytes map to themselves (< U+0100), the others to U+0100.. in byte order, so CLIP's
  // order (printable bytes ascending, then the rest ascending) is simply code-point order
  return [...BYTE_ENCODER].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
}

/** The words the CLIP tokenizer runs BPE on, byte-mapped, with their counts. */
export function clipWordCounts(texts: readonly string[]): Map<string, number> {
  const utf8 = new TextEncoder();
  const counts = new Map<string, number>();
  for (const text of texts) {
    const normalized = basicTokenize(text).join(' ');
    for (const match of normalized.matchAll(CLIP_PATTERN)) {
      const word = match[0];
      // the tokenizer keeps these whole (they are added tokens), so BPE never sees them
      if (word === BOS_TOKEN || word === EOS_TOKEN) continue;
      const mapped = Array.from(utf8.encode(word), (b) => BYTE_ENCODER[b]!).join('');
      counts.set(mapped, (counts.get(mapped) ?? 0) + 1);
    }
  }
  return counts;
}

interface Word {
  symbols: string[];
  count: number;
}

function pairCounts(words: readonly Word[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { symbols, count } of words) {
    for (let i = 0; i < symbols.length - 1; i++) {
      const key = `${symbols[i]} ${symbols[i + 1]}`;
      counts.set(key, (counts.get(key) ?? 0) + count);
    }
  }
  return counts;
}

// Same left-to-right, non-overlapping replacement as the tokenizer's bpe() applies for one rank.
function applyMerge(symbols: string[], first: string, second: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; ) {
    if (symbols[i] === first && i < symbols.length - 1 && symbols[i + 1] === second) {
      out.push(first + second);
      i += 2;
    } else {
      out.push(symbols[i]!);
      i += 1;
    }
  }
  return out;
}

/**
 * Learn merges until the vocabulary holds `vocabSize` tokens or no pair is frequent enough (then
 * the vocabulary is smaller: once every word is a single token there is nothing left to merge).
 */
export function trainClipBpe(texts: readonly string[], opts: BpeTrainOptions): TrainedBpe {
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < BASE_VOCAB_SIZE + SPECIAL_COUNT) {
    throw new Error(`vocabSize must be an integer of at least ${BASE_VOCAB_SIZE + SPECIAL_COUNT} (bytes, their </w> forms, BOS, EOS), got ${opts.vocabSize}`);
  }
  const base = baseSymbols();
  const tokens = [...base, ...base.map((s) => s + END_OF_WORD)];
  const known = new Set(tokens);

  // sorted so that the merge order cannot depend on the order words were first seen
  const words: Word[] = [...clipWordCounts(texts)]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([word, count]) => {
      const symbols = [...word]; // byte-mapped symbols are single BMP code points
      symbols[symbols.length - 1] += END_OF_WORD;
      return { symbols, count };
    });

  const merges: string[] = [];
  while (tokens.length < opts.vocabSize - SPECIAL_COUNT && merges.length < MAX_MERGES) {
    let best = '';
    let bestCount = 0;
    for (const [pair, count] of pairCounts(words)) {
      if (count > bestCount || (count === bestCount && pair < best)) [best, bestCount] = [pair, count];
    }
    if (bestCount === 0 || bestCount < minFrequency) break;
    const [first, second] = best.split(' ') as [string, string];
    for (const word of words) if (word.symbols.length > 1) word.symbols = applyMerge(word.symbols, first, second);
    merges.push(best);
    // two different pairs can spell the same token; vocab.json lists it once, at its first merge
    const merged = first + second;
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
  }
  tokens.push(BOS_TOKEN, EOS_TOKEN);
  const vocab: Record<string, number> = {};
  tokens.forEach((token, id) => (vocab[token] = id));
  return { vocab, merges };
}

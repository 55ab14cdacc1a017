/**
 * CLIP's 49408-token vocabulary from OpenAI's BPE merge file (`bpe_simple_vocab_16e6.txt`), built
 * as `clip/simple_tokenizer.py` (SimpleTokenizer.__init__) builds it: the 256 byte symbols, the
 * same with `</w>`, one token per merge for the first 49152 − 256 − 2 merges, then
 * `<|startoftext|>` and `<|endoftext|>`. The ids equal Hugging Face's vocab.json for
 * openai/clip-vit-large-patch14, so the result feeds createClipTokenizer as vocab.json and
 * merges.txt would.
 *
 * Pure: takes the merge file's text (the caller decompresses it).
 */
import { BYTE_ENCODER } from './clip-tokenizer.js';

export const CLIP_VOCAB_SIZE = 49408;
const MERGE_COUNT = 49152 - 256 - 2;

export interface ClipVocabulary {
  vocab: Record<string, number>;
  /** merges.txt as transformers writes it: a version line, then one merge per line. */
  merges: string;
}

export function clipVocabulary(bpeText: string): ClipVocabulary {
  // Line 1 is a header; the merges follow.
  const merges = bpeText.split('\n').slice(1, MERGE_COUNT + 1);
  if (merges.length !== MERGE_COUNT || merges.some((m) => m.split(' ').length !== 2)) {
    throw new Error(`CLIP BPE file: expected ${MERGE_COUNT} merges of two symbols after the header line`);
  }
  // bytes_to_unicode() lists the printable bytes first, then the rest (mapped past U+00FF), each
  // group in byte order: that is the byte symbols sorted by code point.
  const bytes = [...BYTE_ENCODER].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  const words = [...bytes, ...bytes.map((b) => `${b}</w>`), ...merges.map((m) => m.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
  const vocab: Record<string, number> = {};
  words.forEach((w, i) => (vocab[w] = i));
  return { vocab, merges: ['#version: 0.2', ...merges].join('\n') + '\n' };
}

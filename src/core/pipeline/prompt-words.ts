/**
 * Words of a prompt and the tokens they become, as diffusers' Prompt-to-Prompt pipeline finds them
 * (its get_word_inds): shared by the attention edits and local blending.
 */
import { decode, encode, type ClipTokenizer } from '../tokenizer/clip-tokenizer.js';

const chars = (s: string) => [...s].length;

/**
 * Token positions (1-based past <|startoftext|>) of the words of `text` at `places` (word indices
 * in the text split at spaces), matching decoded token lengths to word lengths as the pipeline's
 * get_word_inds does.
 */
export function wordTokenIndices(tok: ClipTokenizer, text: string, places: readonly number[]): number[] {
  if (places.length === 0) return [];
  const words = text.split(' ');
  const ids = encode(tok, text, { padding: 'none', truncation: false }).ids.slice(1, -1);
  const pieces = ids.map((id) => decode(tok, [id]).trim().replace(/^#+|#+$/g, ''));
  const out: number[] = [];
  let length = 0;
  let word = 0;
  pieces.forEach((piece, i) => {
    length += chars(piece);
    if (places.includes(word)) out.push(i + 1);
    if (length >= chars(words[word] ?? '')) {
      word++;
      length = 0;
    }
  });
  return out;
}

/** Word indices of `word` in `text` split at spaces. */
export function placesOf(text: string, word: string): number[] {
  return text.split(' ').flatMap((w, i) => (w === word ? [i] : []));
}


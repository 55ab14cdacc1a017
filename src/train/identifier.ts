/**
 * DreamBooth's subject identifier (Ruiz et al. 2023, §3.2 "Designing Prompts for Few-Shot
 * Personalization"): a word that the text encoder has a weak prior for, so fine-tuning binds it to
 * the subject without having to unlearn a meaning. The paper looks up rare tokens in the
 * vocabulary and samples among those of at most 3 characters (T5 ids 5000–10000); the widely used
 * "sks" is such a token of CLIP's vocabulary. Here: whole-word BPE tokens of 2–3 ASCII letters from
 * the rarer (later-merged, higher-id) half of the learned vocabulary, that tokenize back to exactly
 * themselves and are not common English words; one of them is drawn with the run's seed.
 */
import type { ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { tokenId, tokenize } from '../core/tokenizer/clip-tokenizer.js';
import { Rng } from '../core/random.js';
import { PainterError } from '../errors.js';

const WORD_END = '</w>';
/** CLIP's byte-level BPE starts with 256 byte symbols and their 256 word-final forms. */
const BYTE_SYMBOLS = 512;
/** Tokens among the most frequent tenth of the learned merges count as common words. */
const FREQUENT_FRACTION = 0.1;

/** Frequent English words and everyday prompt vocabulary: never chosen, and a warning when given. */
const COMMON_WORDS = new Set(
  (
    'a about after again all also am an and any are art as at back be bad because been before best big bird black blue boy ' +
    'but by can car cat city come could cup day did do does dog down each eat end even eye far few for from fun get girl go ' +
    'god good got great green had has have he her here high him his home hot how i if in into is it its job just key kid ' +
    'know last let life like little long look low make man many may me men more most my new no not now of off oil old on ' +
    'one only or other our out over own people photo picture put red run said same saw say see set she should sky so ' +
    'some sun take than that the their them then there these they thing think this those time to too two up us use very ' +
    'war was way we well were what when which white who why will with woman work would year yes yet you young your ' +
    'bed box bus cow egg fox hat ice ink leg map mom dad pen pet pig rat sea tea toy van web zoo'
  ).split(' '),
);

/** The word a whole-word vocabulary token stands for ("dog</w>" → "dog"), or undefined. */
function wordOf(token: string): string | undefined {
  return token.endsWith(WORD_END) ? token.slice(0, -WORD_END.length) : undefined;
}

/** Ids below this are the most frequently merged (common) tokens. */
function frequentIdLimit(tok: ClipTokenizer): number {
  return BYTE_SYMBOLS + Math.floor(FREQUENT_FRACTION * Math.max(0, tok.encoder.size - BYTE_SYMBOLS));
}

/** Whether `word` is one BPE token that tokenizes back to itself (so the prompt really uses it). */
function roundTrips(tok: ClipTokenizer, word: string): boolean {
  const pieces = tokenize(tok, word);
  return pieces.length === 1 && pieces[0] === `${word}${WORD_END}`;
}

/**
 * Rare-token candidates, ordered by id: whole-word tokens of 2–3 lowercase ASCII letters from the
 * upper half of the learned merges (falling back to all learned merges for tiny vocabularies),
 * excluding common words and `avoid`.
 */
export function rareTokenCandidates(tok: ClipTokenizer, avoid: readonly string[] = []): string[] {
  const skip = new Set(avoid.map((w) => w.toLowerCase()));
  const words: { word: string; id: number }[] = [];
  for (const [token, id] of tok.encoder) {
    const word = wordOf(token);
    if (word === undefined || !/^[a-z]{2,3}$/.test(word) || id < BYTE_SYMBOLS) continue;
    if (COMMON_WORDS.has(word) || skip.has(word) || tok.addedEncoder.has(word)) continue;
    words.push({ word, id });
  }
  words.sort((a, b) => a.id - b.id);
  const learned = tok.encoder.size - BYTE_SYMBOLS;
  const rareFrom = BYTE_SYMBOLS + Math.floor(learned / 2);
  const rare = words.filter((w) => w.id >= rareFrom);
  const pool = rare.length > 0 ? rare : words.filter((w) => w.id >= frequentIdLimit(tok));
  return pool.filter((w) => roundTrips(tok, w.word)).map((w) => w.word);
}

/** Draws the identifier with the run's seed (same seed and tokenizer: same identifier). */
export function chooseIdentifier(tok: ClipTokenizer, seed: number, avoid: readonly string[] = []): string {
  const candidates = rareTokenCandidates(tok, avoid);
  if (candidates.length === 0) {
    throw new PainterError('the tokenizer has no rare short token to use as the subject identifier; pass --identifier WORD (a rare word such as "sks")');
  }
  return candidates[new Rng(seed + 0x1d).int(candidates.length)]!;
}

/**
 * Why a user-chosen identifier is a poor choice (a common word: its existing meaning competes with
 * the subject), or undefined when it looks rare enough.
 */
export function commonWordProblem(tok: ClipTokenizer, identifier: string, className: string): string | undefined {
  const words = identifier.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.includes(className.toLowerCase())) return `it contains the class noun "${className}"`;
  const common = words.find((w) => COMMON_WORDS.has(w));
  if (common) return `"${common}" is a common English word`;
  const limit = frequentIdLimit(tok);
  for (const w of words) {
    const pieces = tokenize(tok, w);
    const id = pieces.length === 1 ? tokenId(tok, pieces[0]!) : undefined;
    if (id !== undefined && id >= BYTE_SYMBOLS && id < limit) return `"${w}" is one of the tokenizer's most frequent words`;
  }
  return undefined;
}

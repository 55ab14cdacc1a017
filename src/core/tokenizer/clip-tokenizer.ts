/**
 * CLIP byte-level BPE tokenizer, reproducing Hugging Face transformers' slow `CLIPTokenizer` as it behaves
 * WITHOUT ftfy installed (the setup the reference data was generated with, see fixtures REFERENCE-README):
 *
 *   1. added tokens (special tokens, SD-2.x's pad token `!`, Textual Inversion placeholders) are cut out of the
 *      raw text first, with transformers' trie (added-token-trie.ts), and map straight to their id;
 *   2. every other piece goes through BERT's BasicTokenizer(strip_accents=False, do_split_on_punc=False):
 *      drop control chars, whitespace -> ' ', spaces around CJK ideographs, NFC, split on whitespace, lower-case;
 *   3. CLIP's regex splits words, each word's UTF-8 bytes are mapped to printable characters (bytes_to_unicode)
 *      and merged with the BPE ranks from merges.txt; the last symbol of a word carries the `</w>` marker.
 *
 * The special and added tokens come from the tokenizer files, validated in clip-tokenizer-config.ts. This module
 * is the tokenizer's public face: callers import everything from here.
 *
 * Pure: takes the already-read file contents, touches no file system.
 */
import { PainterError } from '../../errors.js';
import { buildTrie, trieSplit, type TrieNode } from './added-token-trie.js';
import {
  makeSpec,
  parseClipTokenizerConfig,
  type ClipTokenizerConfig,
  type ClipTokenizerFiles,
} from './clip-tokenizer-config.js';

export type { AddedTokenSpec, ClipTokenizerFiles } from './clip-tokenizer-config.js';

/** The settings from the tokenizer files plus what the BPE needs: merge ranks, the added-token trie, a cache. */
export interface ClipTokenizer extends ClipTokenizerConfig {
  /** "first second" -> merge rank (merges.txt symbols never contain spaces) */
  readonly bpeRanks: ReadonlyMap<string, number>;
  trie: TrieNode;
  readonly bpeCache: Map<string, string[]>;
}

export interface EncodeOptions {
  /** default modelMaxLength */
  maxLength?: number;
  /** default 'max_length', as StableDiffusionPipeline.encode_prompt; 'longest' pads nothing for one prompt */
  padding?: 'max_length' | 'longest' | 'none';
  /** default true */
  truncation?: boolean;
}

export interface Encoding {
  ids: number[];
  attentionMask: number[];
  truncated: boolean;
  /** text of the ids truncation dropped (what diffusers logs as truncated) */
  truncatedText?: string;
}

// CLIP's regex `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` with
// Python regex's IGNORECASE spelled out: the text is already lower-case, and on it IGNORECASE only adds U+017F
// (long s, folds to s) to the literal `s` and drops U+0345 (folds to a Greek letter) from the last class, so
// U+0345 matches nothing and vanishes. JS's /i flag instead puts U+0345 into \p{L}, hence no /i here.
export const CLIP_PATTERN =
  /<\|[sſ]tartoftext\|>|<\|endoftext\|>|'[sſ]|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}\u0345]+/gu;
// Python's str.isspace() set, used wherever Python calls split()/strip() without arguments.
const PY_SPACE = '\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_SPACE_RUN = new RegExp(`[${PY_SPACE}]+`, 'u');
const PY_LEADING_SPACE = new RegExp(`^[${PY_SPACE}]+`, 'u');
const PY_TRAILING_SPACE = new RegExp(`[${PY_SPACE}]+$`, 'u');
const CONTROL = /\p{C}/u;
// Code points Unicode 15.0-17.0 assigned. The reference ran Python 3.11, whose unicodedata is Unicode 14.0: there
// they are unassigned (category Cn) and _clean_text drops them (new emoji included), while Node knows them.
const UNICODE_14_UNASSIGNED: ReadonlyArray<readonly [number, number]> = (
  '88f 897 c5c cdc cf3 ece 1acf-1add 1ae0-1aeb 1b4e-1b4f 1b7f 1c89-1c8a 20c1 2427-2429 2b96 2ffc-2fff ' +
  '31e4-31e5 31ef a7cb-a7cf a7d2 a7d4 a7da-a7dc a7f1 fbc3-fbd2 fd90-fd91 fdc8-fdce 105c0-105f3 10940-10959 ' +
  '10d40-10d65 10d69-10d85 10d8e-10d8f 10ec2-10ec7 10ed0-10ed8 10efa-10eff 1123f-11241 11380-11389 1138b ' +
  '1138e 11390-113b5 113b7-113c0 113c2 113c5 113c7-113ca 113cc-113d5 113d7-113d8 113e1-113e2 116d0-116e3 ' +
  '11b00-11b09 11b60-11b67 11bc0-11be1 11bf0-11bf9 11db0-11ddb 11de0-11de9 11f00-11f10 11f12-11f3a ' +
  '11f3e-11f5a 1342f 13439-13455 13460-143fa 16100-16139 16d40-16d79 16ea0-16eb8 16ebb-16ed3 16ff2-16ff6 ' +
  '187f8-187ff 18cff 18d09-18d1e 18d80-18df2 1b132 1b155 1cc00-1ccfc 1cd00-1ceb3 1ceba-1ced0 1cee0-1cef0 ' +
  '1d2c0-1d2d3 1df25-1df2a 1e030-1e06d 1e08f 1e4d0-1e4f9 1e5d0-1e5fa 1e5ff 1e6c0-1e6de 1e6e0-1e6f5 ' +
  '1e6fe-1e6ff 1f6d8 1f6dc 1f774-1f77f 1f7d9 1f8b2-1f8bb 1f8c0-1f8c1 1f8d0-1f8d8 1fa54-1fa57 1fa75-1fa77 ' +
  '1fa87-1fa8a 1fa8e-1fa8f 1faad-1faaf 1fabb-1fabf 1fac6 1fac8 1facd-1facf 1fada-1fadc 1fadf 1fae8-1faea ' +
  '1faef 1faf7-1faf8 1fbcb-1fbef 1fbfa 2b739-2b73f 2cea2-2cead 2ebf0-2ee5d 31350-33479'
)
  .split(' ')
  .map((range) => range.split('-').map((h) => parseInt(h, 16)))
  .map(([lo, hi = lo]) => [lo!, hi!] as const);
const unassignedInUnicode14 = (cp: number): boolean =>
  cp >= 0x88f && UNICODE_14_UNASSIGNED.some(([lo, hi]) => cp >= lo && cp <= hi);
const SPACE_SEPARATOR = /\p{Zs}/u;

const pyLstrip = (s: string): string => s.replace(PY_LEADING_SPACE, '');
const pyRstrip = (s: string): string => s.replace(PY_TRAILING_SPACE, '');
const pyStrip = (s: string): string => pyRstrip(pyLstrip(s));
const pySplit = (s: string): string[] => s.split(PY_SPACE_RUN).filter((w) => w.length > 0);

// ---------------------------------------------------------------------------------------------------------------
// bytes_to_unicode: printable bytes map to themselves, the rest to U+0100.. so no BPE symbol is whitespace/control.

function buildByteEncoder(): string[] {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

export const BYTE_ENCODER: readonly string[] = buildByteEncoder();
const BYTE_DECODER = new Map(BYTE_ENCODER.map((ch, b) => [ch, b]));
const UTF8 = new TextEncoder();

// ---------------------------------------------------------------------------------------------------------------
// BasicTokenizer(strip_accents=False, do_split_on_punc=False), the fallback CLIPTokenizer uses without ftfy.

// BERT's _is_chinese_char blocks (CJK Unified Ideographs and extensions, compatibility ideographs)
const CJK_RANGES = [[0x4e00, 0x9fff], [0x3400, 0x4dbf], [0x20000, 0x2a6df], [0x2a700, 0x2b73f], [0x2b740, 0x2b81f],
  [0x2b820, 0x2ceaf], [0xf900, 0xfaff], [0x2f800, 0x2fa1f]] as const;
const isCjkIdeograph = (cp: number): boolean => CJK_RANGES.some(([lo, hi]) => cp >= lo && cp <= hi);

export function basicTokenize(text: string): string[] {
  let cleaned = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    // \t \n \r are category Cc but BERT counts them as whitespace, not control
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || SPACE_SEPARATOR.test(ch)) cleaned += ' ';
    else if (cp === 0 || cp === 0xfffd || CONTROL.test(ch) || unassignedInUnicode14(cp)) continue;
    else if (isCjkIdeograph(cp)) cleaned += ` ${ch} `;
    else cleaned += ch;
  }
  // Python lower-cases word by word, after NFC
  return pySplit(cleaned.normalize('NFC')).map((w) => w.toLowerCase());
}

// ---------------------------------------------------------------------------------------------------------------
// Byte-level BPE

function bpe(tok: ClipTokenizer, token: string): string[] {
  const cached = tok.bpeCache.get(token);
  if (cached) return cached;
  // byte-mapped symbols are all in the BMP, so UTF-16 indexing is per symbol
  let word = [...token.slice(0, -1)].concat(token.slice(-1) + '</w>');
  while (word.length > 1) {
    let bestRank = Infinity;
    let first = '';
    let second = '';
    for (let i = 0; i < word.length - 1; i++) {
      const rank = tok.bpeRanks.get(`${word[i]} ${word[i + 1]}`);
      if (rank !== undefined && rank < bestRank) {
        bestRank = rank;
        first = word[i]!;
        second = word[i + 1]!;
      }
    }
    if (bestRank === Infinity) break;
    const merged: string[] = [];
    for (let i = 0; i < word.length; ) {
      if (word[i] === first && i < word.length - 1 && word[i + 1] === second) {
        merged.push(first + second);
        i += 2;
      } else {
        merged.push(word[i]!);
        i += 1;
      }
    }
    word = merged;
  }
  tok.bpeCache.set(token, word);
  return word;
}

// CLIPTokenizer._tokenize: text that holds no added token
function bpeTokenize(tok: ClipTokenizer, text: string): string[] {
  const normalized = basicTokenize(text).join(' ');
  const out: string[] = [];
  for (const match of normalized.matchAll(CLIP_PATTERN)) {
    const word = match[0];
    // the cache pre-seeds these two: they stay whole, without </w>
    if (word === '<|startoftext|>' || word === '<|endoftext|>') {
      out.push(word);
      continue;
    }
    out.push(...bpe(tok, Array.from(UTF8.encode(word), (b) => BYTE_ENCODER[b]).join('')));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Construction

// CLIPTokenizer reads merges.txt lines [1, 49152 - 256 - 2 + 1): the first line is the "#version" header.
const MERGES_END = 49152 - 256 - 2 + 1;

function parseMerges(merges: string): Map<string, number> {
  const ranks = new Map<string, number>();
  pyStrip(merges).split('\n').slice(1, MERGES_END).forEach((line, rank) => {
    const parts = pySplit(line);
    // a duplicate merge keeps its last rank, like Python's dict(zip(merges, range(...)))
    if (parts.length === 2) ranks.set(`${parts[0]} ${parts[1]}`, rank);
  });
  return ranks;
}

/** Build a tokenizer from the contents of vocab.json, merges.txt, tokenizer_config.json (and special_tokens_map.json). */
export function createClipTokenizer(files: ClipTokenizerFiles): ClipTokenizer {
  const config = parseClipTokenizerConfig(files);
  return { ...config, bpeRanks: parseMerges(files.merges), trie: buildTrie(config.addedEncoder.keys()), bpeCache: new Map() };
}

// ---------------------------------------------------------------------------------------------------------------
// Public operations

/** len(tokenizer): distinct tokens in vocab.json plus added tokens. */
export function vocabSize(tok: ClipTokenizer): number {
  let size = tok.encoder.size;
  for (const content of tok.addedEncoder.keys()) if (!tok.encoder.has(content)) size += 1;
  return size;
}

/** Id of a token string (added tokens first, then vocab.json), or undefined when it is neither. */
export function tokenId(tok: ClipTokenizer, token: string): number | undefined {
  return tok.addedEncoder.get(token) ?? tok.encoder.get(token);
}

/** BPE tokens of `text` without BOS/EOS (transformers' tokenizer.tokenize). */
export function tokenize(tok: ClipTokenizer, text: string): string[] {
  const pieces = trieSplit(tok.trie, text);
  // whitespace handling around added tokens, per their lstrip/rstrip/single_word flags
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!;
    const id = tok.addedEncoder.get(piece);
    if (id === undefined) continue;
    const spec = tok.addedDecoder.get(id)!;
    const left = i > 0 ? pieces[i - 1] : undefined;
    const right = i < pieces.length - 1 ? pieces[i + 1] : undefined;
    if (spec.rstrip && right) pieces[i + 1] = pyLstrip(right);
    if (spec.lstrip && left) pieces[i - 1] = pyRstrip(left);
    if (spec.singleWord && left && !left.endsWith(' ')) {
      pieces[i - 1] += piece;
      pieces[i] = '';
    } else if (spec.singleWord && right && !right.startsWith(' ')) {
      pieces[i + 1] = piece + pieces[i + 1];
      pieces[i] = '';
    }
  }
  const tokens: string[] = [];
  for (const piece of pieces) {
    if (!piece) continue;
    if (tok.addedEncoder.has(piece)) tokens.push(piece);
    else tokens.push(...bpeTokenize(tok, piece));
  }
  return tokens;
}

function tokenToId(tok: ClipTokenizer, token: string): number {
  return tok.addedEncoder.get(token) ?? tok.encoder.get(token) ?? tok.unkTokenId;
}

/** Token strings of ids (transformers' convert_ids_to_tokens); an id outside the vocabulary throws. */
export function idsToTokens(tok: ClipTokenizer, ids: readonly number[]): string[] {
  return ids.map((id) => {
    const token = tok.addedDecoder.get(id)?.content ?? tok.decoder.get(id);
    if (token === undefined) throw new Error(`Token id ${id} is not in the tokenizer's vocabulary (size ${vocabSize(tok)})`);
    return token;
  });
}

/**
 * Ids with BOS/EOS. Defaults reproduce StableDiffusionPipeline.encode_prompt:
 * padding 'max_length', truncation on, maxLength = modelMaxLength.
 */
export function encode(tok: ClipTokenizer, text: string, opts: EncodeOptions = {}): Encoding {
  const maxLength = opts.maxLength ?? tok.modelMaxLength;
  const padding = opts.padding ?? 'max_length';
  const truncation = opts.truncation ?? true;
  if (!(maxLength >= 2)) throw new Error(`maxLength must be at least 2 (room for BOS and EOS), got ${maxLength}`);

  let content = tokenize(tok, text).map((t) => tokenToId(tok, t));
  let removed: number[] = [];
  const cut = truncation ? Math.max(0, content.length - (maxLength - 2)) : 0; // keep room for BOS and EOS
  if (cut > 0 && tok.truncationSide === 'right') [content, removed] = [content.slice(0, -cut), content.slice(-cut)];
  else if (cut > 0) [removed, content] = [content.slice(0, cut), content.slice(cut)];
  let ids = [tok.bosTokenId, ...content, tok.eosTokenId];
  let attentionMask = ids.map(() => 1);
  const pad = padding === 'max_length' && Number.isFinite(maxLength) ? Math.max(0, maxLength - ids.length) : 0;
  const [padIds, zeros] = [new Array<number>(pad).fill(tok.padTokenId), new Array<number>(pad).fill(0)];
  if (tok.paddingSide === 'right') [ids, attentionMask] = [[...ids, ...padIds], [...attentionMask, ...zeros]];
  else [ids, attentionMask] = [[...padIds, ...ids], [...zeros, ...attentionMask]];
  const truncated = removed.length > 0;
  return truncated ? { ids, attentionMask, truncated, truncatedText: decode(tok, removed) } : { ids, attentionMask, truncated };
}

// CLIPTokenizer.convert_tokens_to_string: undo the byte mapping, decode UTF-8 (errors="replace"), `</w>` -> ' '
function tokensToString(tokens: readonly string[]): string {
  const bytes = Uint8Array.from(tokens.join(''), (ch) => {
    const b = BYTE_DECODER.get(ch);
    if (b === undefined) throw new Error(`Cannot decode token text ${JSON.stringify(ch)}: not a byte-level BPE symbol`);
    return b;
  });
  // ignoreBOM keeps a leading U+FEFF, as Python's utf-8 codec does
  const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);
  return pyStrip(text.replaceAll('</w>', ' '));
}

// transformers' clean_up_tokenization
const CLEAN_UPS = [[' .', '.'], [' ?', '?'], [' !', '!'], [' ,', ','], [" ' ", "'"], [" n't", "n't"], [" 'm", "'m"],
  [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"]] as const;
const cleanUpTokenization = (text: string): string => CLEAN_UPS.reduce((t, [from, to]) => t.replaceAll(from, to), text);

/** Text of ids, special tokens kept (transformers' tokenizer.decode(ids) with default arguments). */
export function decode(tok: ClipTokenizer, ids: readonly number[]): string {
  const tokens = idsToTokens(tok, ids);
  // Non-special added tokens (e.g. Textual Inversion placeholders) are not byte-mapped: they are emitted
  // verbatim as separate pieces, joined with spaces.
  const special = new Set(tok.specialTokens);
  const verbatim = new Set([...tok.addedEncoder.keys()].filter((t) => !special.has(t)));
  for (const t of tok.additionalSpecialTokens) if (tokenToId(tok, t) >= tok.encoder.size) verbatim.add(t);
  const pieces: string[] = [];
  let run: string[] = [];
  for (const token of tokens) {
    if (!verbatim.has(token)) run.push(token);
    else {
      const s = run.length > 0 ? tokensToString(run) : '';
      pieces.push(...(s ? [s, token] : [token]));
      run = [];
    }
  }
  if (run.length > 0) pieces.push(tokensToString(run));
  const text = pieces.join(' ');
  return tok.cleanUpTokenizationSpaces ? cleanUpTokenization(text) : text;
}

/**
 * Textual Inversion: add new tokens with ids vocabSize, vocabSize + 1, ...; they are cut out of prompts before
 * BPE, matched case-sensitively. A token the tokenizer already knows throws (like diffusers' TI script).
 */
export function addTokens(tok: ClipTokenizer, tokens: readonly string[]): number[] {
  tokens.forEach((token, i) => {
    if (!token) throw new PainterError('Cannot add an empty token: give the placeholder token a name');
    if (tokenId(tok, token) !== undefined || tokens.indexOf(token) < i) {
      throw new PainterError(`The tokenizer already contains the token ${JSON.stringify(token)}; choose a placeholder token that is not in the vocabulary`);
    }
  });
  const first = vocabSize(tok);
  const ids = tokens.map((token, i) => {
    tok.addedDecoder.set(first + i, makeSpec(token, undefined, false));
    tok.addedEncoder.set(token, first + i);
    return first + i;
  });
  tok.trie = buildTrie(tok.addedEncoder.keys());
  return ids;
}

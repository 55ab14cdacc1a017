import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  addTokens,
  createClipTokenizer,
  decode,
  encode,
  idsToTokens,
  tokenId,
  tokenize,
  vocabSize,
  type ClipTokenizer,
} from '../src/core/tokenizer/clip-tokenizer.js';
import { loadClipTokenizer } from '../src/io/load-tokenizer.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/tiny-sd-a/', import.meta.url));
const TOKENIZER_DIR = path.join(FIXTURE, 'tokenizer');

interface ReferencePrompt {
  prompt: string;
  input_ids: number[];
  attention_mask: number[];
  untruncated_input_ids: number[];
  tokens: string[];
  truncated: boolean;
}
const reference = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'reference/tokenizer.json'), 'utf8')) as {
  info: { len_tokenizer: number; bos_token_id: number; eos_token_id: number; pad_token_id: number; model_max_length: number };
  prompts: ReferencePrompt[];
};

const readFixture = (name: string): string => fs.readFileSync(path.join(TOKENIZER_DIR, name), 'utf8');

// the fixture's vocabulary with another tokenizer_config.json, as SD-2.x folders ship it
function withConfig(tokenizerConfig: unknown, specialTokensMap?: unknown): ClipTokenizer {
  return createClipTokenizer({
    vocab: JSON.parse(readFixture('vocab.json')) as Record<string, number>,
    merges: readFixture('merges.txt'),
    tokenizerConfig,
    specialTokensMap,
  });
}

describe('CLIP tokenizer parity with transformers (reference/tokenizer.json)', () => {
  const tok = loadClipTokenizer(TOKENIZER_DIR);

  it('has the reference special ids, length and model_max_length', () => {
    expect(vocabSize(tok)).toBe(reference.info.len_tokenizer);
    expect(tok.bosTokenId).toBe(reference.info.bos_token_id);
    expect(tok.eosTokenId).toBe(reference.info.eos_token_id);
    expect(tok.padTokenId).toBe(reference.info.pad_token_id);
    expect(tok.modelMaxLength).toBe(reference.info.model_max_length);
    expect(reference.prompts.length).toBe(20);
  });

  it.each(reference.prompts.map((p) => [JSON.stringify(p.prompt), p] as const))('reproduces %s', (_, p) => {
    const padded = encode(tok, p.prompt);
    expect(padded.ids).toEqual(p.input_ids);
    expect(padded.attentionMask).toEqual(p.attention_mask);
    expect(padded.truncated).toBe(p.truncated);

    const untruncated = encode(tok, p.prompt, { padding: 'longest', truncation: false });
    expect(untruncated.ids).toEqual(p.untruncated_input_ids);
    expect(untruncated.attentionMask).toEqual(p.untruncated_input_ids.map(() => 1));

    expect([tok.bosToken, ...tokenize(tok, p.prompt), tok.eosToken]).toEqual(p.tokens);
    expect(idsToTokens(tok, p.untruncated_input_ids)).toEqual(p.tokens);
  });

  it('truncation keeps BOS .. EOS inside maxLength and reports the dropped text', () => {
    const long = reference.prompts.find((p) => p.truncated)!;
    const enc = encode(tok, long.prompt);
    expect(enc.ids).toHaveLength(77);
    expect(enc.ids[76]).toBe(tok.eosTokenId);
    // diffusers logs batch_decode(untruncated_ids[:, 76:-1]) as the truncated part
    expect(enc.truncatedText).toBe(decode(tok, long.untruncated_input_ids.slice(76, -1)));
    expect(enc.truncatedText).toBe('warm light, film grain, 3 5 mm');

    const short = encode(tok, 'a photo of a cat', { maxLength: 5 });
    expect(short.ids).toEqual([tok.bosTokenId, 320, 526, 518, tok.eosTokenId]);
    expect(short.truncatedText).toBe('a cat');
    const unpadded = encode(tok, 'a photo of a cat', { padding: 'none' });
    expect(unpadded.ids).toEqual([tok.bosTokenId, 320, 526, 518, 320, 535, tok.eosTokenId]);
    expect(unpadded.truncated).toBe(false);
  });

  it('decodes like tokenizer.decode (special tokens kept, clean-up of spaces before punctuation)', () => {
    expect(decode(tok, encode(tok, 'a photo of a cat', { padding: 'none' }).ids)).toBe(
      '<|startoftext|>a photo of a cat <|endoftext|>',
    );
    expect(decode(tok, encode(tok, "it's a dog's life, isn't it?", { padding: 'none' }).ids)).toBe(
      "<|startoftext|>it's a dog's life, isn 't it? <|endoftext|>",
    );
    expect(decode(tok, encode(tok, 'naïve café 🐱 東京', { padding: 'none' }).ids)).toBe(
      '<|startoftext|>naïve café 🐱 東 京 <|endoftext|>',
    );
    expect(() => decode(tok, [123456])).toThrow(/123456/);
  });

  it('treats an upper-case <|ENDOFTEXT|> like transformers: lower-cased, then the regex keeps it whole', () => {
    expect(tokenize(tok, 'a <|ENDOFTEXT|> b')).toEqual(['a</w>', '<|endoftext|>', 'b</w>']);
  });
});

describe('Textual Inversion tokens', () => {
  it('adds a placeholder token with the next id and cuts it out of prompts before BPE', () => {
    const tok = loadClipTokenizer(TOKENIZER_DIR);
    const before = vocabSize(tok);
    expect(addTokens(tok, ['<cat-toy>'])).toEqual([before]);
    expect(vocabSize(tok)).toBe(before + 1);
    expect(tokenId(tok, '<cat-toy>')).toBe(897);

    expect(tokenize(tok, 'a photo of <cat-toy>')).toEqual(['a</w>', 'photo</w>', 'of</w>', '<cat-toy>']);
    const enc = encode(tok, 'a photo of <cat-toy>');
    expect(enc.ids.slice(0, 6)).toEqual([895, 320, 526, 518, 897, 896]);
    expect(enc.ids.slice(6)).toEqual(new Array(71).fill(tok.padTokenId));
    expect(enc.attentionMask.slice(0, 7)).toEqual([1, 1, 1, 1, 1, 1, 0]);

    // matched case-sensitively and without word boundaries, as transformers' trie does
    expect(encode(tok, 'a <cat-toy>toy on a <Cat-Toy>', { padding: 'none' }).ids).toEqual([
      895, 320, 897, 83, 78, 344, 519, 320, 283, 535, 268, 83, 78, 344, 285, 896,
    ]);
    expect(decode(tok, encode(tok, '<cat-toy><cat-toy>', { padding: 'none' }).ids)).toBe(
      '<|startoftext|> <cat-toy> <cat-toy> <|endoftext|>',
    );

    expect(addTokens(tok, ['<v1>', '<v2>'])).toEqual([before + 1, before + 2]);
  });

  it('refuses a token the tokenizer already has, naming it', () => {
    const tok = loadClipTokenizer(TOKENIZER_DIR);
    expect(() => addTokens(tok, ['cat</w>'])).toThrow(/"cat<\/w>"/);
    expect(() => addTokens(tok, ['<|endoftext|>'])).toThrow(/already contains the token "<\|endoftext\|>"/);
    addTokens(tok, ['<cat-toy>']);
    expect(() => addTokens(tok, ['<cat-toy>'])).toThrow(/"<cat-toy>"/);
    expect(() => addTokens(tok, ['<a>', '<a>'])).toThrow(/"<a>"/);
    // a refused call adds nothing
    expect(vocabSize(tok)).toBe(898);
  });
});

describe('tokenizer_config.json styles', () => {
  const sd1Config = JSON.parse(readFixture('tokenizer_config.json')) as Record<string, unknown>;
  const sd1Map = JSON.parse(readFixture('special_tokens_map.json')) as Record<string, unknown>;
  const addedToken = (content: string, normalized: boolean) => ({
    content, lstrip: false, normalized, rstrip: false, single_word: false, special: true,
  });
  // transformers' ids for the SD-2.x pad token `!` (vocab id 0), which is split out of the text like a special token
  const wowIds = [895, 622, 342, 0, 0, 0, 71, 68, 75, 75, 334, 896];

  it('SD-2.x legacy: pad_token "!" as a plain string (AddedToken dicts with __type for the rest)', () => {
    const tok = withConfig({ ...sd1Config, pad_token: '!' }, { ...sd1Map, pad_token: '!' });
    expect(tok.padTokenId).toBe(0);
    expect(vocabSize(tok)).toBe(897);
    expect(tokenize(tok, 'wow!!! hello, world!')).toEqual([
      'wo', 'w</w>', '!', '!', '!', 'h', 'e', 'l', 'l', 'o</w>', ',</w>', 'w', 'or', 'ld</w>', '!',
    ]);
    expect(encode(tok, 'wow!!! hello, world!', { maxLength: 12 }).ids).toEqual(wowIds);
    expect(encode(tok, 'a photo of a cat', { maxLength: 12 }).ids).toEqual([895, 320, 526, 518, 320, 535, 896, 0, 0, 0, 0, 0]);
  });

  it('SD-2.x new style: added_tokens_decoder with plain-string special tokens', () => {
    const tok = withConfig({
      bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>', pad_token: '!',
      model_max_length: 77, clean_up_tokenization_spaces: true, tokenizer_class: 'CLIPTokenizer',
      added_tokens_decoder: {
        '0': addedToken('!', false), '895': addedToken('<|startoftext|>', true), '896': addedToken('<|endoftext|>', true),
      },
    });
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.unkTokenId]).toEqual([895, 896, 0, 896]);
    expect(encode(tok, 'wow!!! hello, world!', { maxLength: 12 }).ids).toEqual(wowIds);
  });

  it('defaults to the CLIP special tokens and appends a special token missing from the vocabulary', () => {
    const tok = withConfig({ model_max_length: 77, pad_token: '<pad>' });
    expect([tok.bosTokenId, tok.eosTokenId, tok.unkTokenId]).toEqual([895, 896, 896]);
    expect(tok.padTokenId).toBe(897);
    expect(encode(tok, 'cat', { maxLength: 5 }).ids).toEqual([895, 535, 896, 897, 897]);
  });

  it('reports every config problem at once, naming the file', () => {
    expect(() => withConfig({ pad_token: 42, model_max_length: 'long' })).toThrow(
      /tokenizer_config\.json: "pad_token".*; tokenizer_config\.json: "model_max_length"/,
    );
  });
});

describe('loadClipTokenizer errors', () => {
  function tokenizerDirWithout(missing: string, replace: Record<string, string> = {}): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-tokenizer-'));
    for (const name of fs.readdirSync(TOKENIZER_DIR)) {
      if (name !== missing) fs.writeFileSync(path.join(dir, name), replace[name] ?? readFixture(name));
    }
    return dir;
  }

  it('names a missing vocab.json and the fix', () => {
    const dir = tokenizerDirWithout('vocab.json');
    try {
      expect(() => loadClipTokenizer(dir)).toThrow(`${path.join(dir, 'vocab.json')}: not found; copy the tokenizer/ folder`);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('names an invalid tokenizer_config.json', () => {
    const dir = tokenizerDirWithout('', { 'tokenizer_config.json': '{"model_max_length": 77,' });
    try {
      expect(() => loadClipTokenizer(dir)).toThrow(/tokenizer_config\.json: not valid JSON/);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('works without special_tokens_map.json and rejects a missing folder', () => {
    const dir = tokenizerDirWithout('special_tokens_map.json');
    try {
      expect(encode(loadClipTokenizer(dir), 'a cat', { padding: 'none' }).ids).toEqual([895, 320, 535, 896]);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
    expect(() => loadClipTokenizer(path.join(FIXTURE, 'no-such-tokenizer'))).toThrow(/tokenizer folder not found/);
  });
});

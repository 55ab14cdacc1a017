import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '../../../src/core/random.js';
import { basicTokenize, decode, encode, tokenize, tokenId, vocabSize, type ClipTokenizer } from '../../../src/core/tokenizer/clip-tokenizer.js';
import { loadClipTokenizer } from '../../../src/io/load-tokenizer.js';
import { BASE_VOCAB_SIZE, BOS_TOKEN, EOS_TOKEN, trainClipBpe, type TrainedBpe } from '../bpe-train.js';
import { MINI_MODEL_MAX_LENGTH, writeMiniTokenizer } from '../tokenizer-files.js';
import {
  caption,
  COLOUR_NAMES,
  FEATURE_SUBJECTS,
  HELD_OUT_COMBINATIONS,
  heldOutSubject,
  NEVER_SEEN_FEATURES,
  OBJECT_KINDS,
  sampleScene,
  sceneForSubject,
} from '../world.js';
import { TINY_SD_A } from '../../../test/helpers.js';

function captions(seed: number, n: number): string[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => caption(sampleScene(rng), rng));
}

function heldOutCaptions(seed: number): string[] {
  const rng = new Rng(seed);
  const subjects = [
    ...HELD_OUT_COMBINATIONS.map((c) => heldOutSubject(c)),
    ...HELD_OUT_COMBINATIONS.map((c, i) => heldOutSubject(c, [{ kind: NEVER_SEEN_FEATURES[i % NEVER_SEEN_FEATURES.length]!, colour: 'red' }])),
    ...FEATURE_SUBJECTS,
  ];
  return subjects.flatMap((s) => Array.from({ length: 8 }, () => caption(sceneForSubject(s, rng), rng)));
}

const content = (tok: ClipTokenizer, text: string): number[] => encode(tok, text, { padding: 'none', truncation: false }).ids.slice(1, -1);

const TRAIN = captions(1, 3000);
const VOCAB_SIZE = 1000;
const trained = trainClipBpe(TRAIN, { vocabSize: VOCAB_SIZE });
const dirs: string[] = [];

async function written(bpe: TrainedBpe): Promise<{ dir: string; tok: ClipTokenizer }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-mini-bpe-'));
  dirs.push(dir);
  await writeMiniTokenizer(bpe, dir);
  return { dir, tok: loadClipTokenizer(dir) };
}

afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe('trainClipBpe', () => {
  it('is deterministic and independent of caption order', () => {
    expect(trainClipBpe(TRAIN, { vocabSize: VOCAB_SIZE })).toEqual(trained);
    expect(trainClipBpe([...TRAIN].reverse(), { vocabSize: VOCAB_SIZE })).toEqual(trained);
  });

  it('lays out ids like CLIP: bytes, bytes</w>, merges, then the special tokens', () => {
    const ids = Object.values(trained.vocab).sort((a, b) => a - b);
    expect(ids).toEqual(ids.map((_, i) => i));
    const n = ids.length;
    expect(n).toBeLessThanOrEqual(VOCAB_SIZE);
    // the first 512 entries are exactly CLIP's (the fixture is a real CLIP vocab.json, truncated)
    const clip = JSON.parse(fs.readFileSync(path.join(TINY_SD_A, 'tokenizer', 'vocab.json'), 'utf8')) as Record<string, number>;
    const base = (v: Record<string, number>): Array<[string, number]> => Object.entries(v).filter(([, id]) => id < BASE_VOCAB_SIZE);
    expect(base(trained.vocab)).toEqual(base(clip));
    expect(trained.vocab[BOS_TOKEN]).toBe(n - 2);
    expect(trained.vocab[EOS_TOKEN]).toBe(n - 1);
    // merges produce the tokens after the base, in order
    const mergedTokens = [...new Set(trained.merges.map((m) => m.replace(' ', '')))];
    const after = Object.entries(trained.vocab).filter(([, id]) => id >= BASE_VOCAB_SIZE && id < n - 2).sort((a, b) => a[1] - b[1]);
    expect(after.map(([t]) => t)).toEqual(mergedTokens);
    for (const m of trained.merges) expect(m.split(' ')).toHaveLength(2);
  });

  it('stops exactly at a small vocabulary size and rejects one below the base', () => {
    const small = trainClipBpe(TRAIN, { vocabSize: 600 });
    expect(Object.keys(small.vocab)).toHaveLength(600);
    expect(small.merges).toEqual(trained.merges.slice(0, small.merges.length));
    expect(() => trainClipBpe(TRAIN, { vocabSize: 513 })).toThrow(/at least 514/);
  });
});

describe('painter-mini tokenizer folder', () => {
  it('writes a folder that loads unchanged and is byte-identical when rewritten', async () => {
    const a = await written(trained);
    const b = await written(trainClipBpe(TRAIN, { vocabSize: VOCAB_SIZE }));
    for (const file of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
      expect(fs.readFileSync(path.join(a.dir, file), 'utf8')).toBe(fs.readFileSync(path.join(b.dir, file), 'utf8'));
    }
    expect(fs.readFileSync(path.join(a.dir, 'merges.txt'), 'utf8').split('\n')[0]).toBe('#version: 0.2');
    const config = JSON.parse(fs.readFileSync(path.join(a.dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['model_max_length']).toBe(MINI_MODEL_MAX_LENGTH);
    expect(config['tokenizer_class']).toBe('CLIPTokenizer');
    const tok = a.tok;
    expect(vocabSize(tok)).toBe(Object.keys(trained.vocab).length);
    expect(tok.bpeRanks.size).toBe(trained.merges.length);
    expect(tok.modelMaxLength).toBe(MINI_MODEL_MAX_LENGTH);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([trained.vocab[BOS_TOKEN], trained.vocab[EOS_TOKEN], trained.vocab[EOS_TOKEN]]);
  });

  it('round-trips every training caption and every held-out caption without unknown symbols', async () => {
    const { tok } = await written(trained);
    const all = [...TRAIN, ...captions(2, 500), ...heldOutCaptions(3)];
    for (const text of all) {
      const tokens = tokenize(tok, text);
      for (const t of tokens) expect(tok.encoder.has(t), `${JSON.stringify(t)} in ${JSON.stringify(text)}`).toBe(true);
      expect(decode(tok, content(tok, text))).toBe(basicTokenize(text).join(' '));
    }
  });

  it('makes every world word a single token, and unseen accessory words still tokenize', async () => {
    const { tok } = await written(trained);
    const words = [...OBJECT_KINDS, ...COLOUR_NAMES, 'striped', 'dotted', 'stripes', 'dots', 'background', 'gradient', 'photo', 'with', 'on', 'a'];
    for (const w of words) expect(tokenize(tok, w), w).toEqual([`${w}</w>`]);
    expect(tokenize(tok, ',')).toEqual([',</w>']);
    // accessories never occur in training captions: several tokens, none unknown
    for (const w of NEVER_SEEN_FEATURES) {
      const tokens = tokenize(tok, w);
      expect(tokens.join('')).toBe(`${w}</w>`);
      for (const t of tokens) expect(tokenId(tok, t)).toBeDefined();
    }
    // bytes outside the corpus (accents, emoji, digits) fall back to byte symbols; CLIP's regex
    // makes every digit a word of its own, so "#42" decodes as "# 4 2"
    const odd = 'a Ünïcode 🐱 cat #42';
    const ids = content(tok, odd);
    expect(ids).not.toContain(tok.unkTokenId);
    expect(decode(tok, ids)).toBe('a ünïcode 🐱 cat # 4 2');
  });

  it('keeps caption lengths well under model_max_length', async () => {
    const { tok } = await written(trained);
    const longest = (texts: string[]): number => Math.max(...texts.map((t) => encode(tok, t, { padding: 'none', truncation: false }).ids.length));
    // with BOS/EOS: every pretraining word is one token, so 22 at most; held-out captions spell the
    // never-seen accessory words ("wearing", "collar") in pieces and reach the low 30s
    expect(longest(TRAIN)).toBeLessThanOrEqual(24);
    expect(longest(heldOutCaptions(3))).toBeLessThanOrEqual(40);
    expect(longest(heldOutCaptions(3))).toBeLessThanOrEqual(MINI_MODEL_MAX_LENGTH);
    expect(encode(tok, TRAIN[0]!).ids).toHaveLength(MINI_MODEL_MAX_LENGTH);
  });
});

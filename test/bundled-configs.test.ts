/**
 * The configs and tokenizer painter ships for single files (fixtures/sd-configs/): CLIP's vocabulary built
 * from OpenAI's merge file tokenizes as OpenAI's own tokenizer does (../shared/clip/
 * reference-ids.json), every family's configs parse, and the package ships them with the licence.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLIP_VOCAB_SIZE } from '../src/core/tokenizer/clip-bpe-vocab.js';
import { encode, tokenize, vocabSize } from '../src/core/tokenizer/clip-tokenizer.js';
import { bundledClipVocabulary, bundledConfigsDir, bundledTokenizer, SD_FAMILIES, type SdFamily } from '../src/io/bundled-configs.js';
import { readConfigs } from '../src/io/pipeline-configs.js';
import { singleFileMetadata } from '../src/io/single-file-setup.js';
import { ROOT } from './helpers.js';

const CLIP_REFERENCE = path.join(ROOT, '..', 'shared', 'clip', 'reference-ids.json');
const FAMILIES = Object.keys(SD_FAMILIES) as SdFamily[];

describe('bundled CLIP tokenizer', () => {
  const reference = JSON.parse(fs.readFileSync(CLIP_REFERENCE, 'utf8')) as { vocab_size: number; cases: { text: string; ids: number[]; tokens: string[] }[] };

  it('builds the 49408-token vocabulary with the special tokens at 49406 and 49407', () => {
    const { vocab } = bundledClipVocabulary();
    expect(Object.keys(vocab)).toHaveLength(CLIP_VOCAB_SIZE);
    expect(reference.vocab_size).toBe(CLIP_VOCAB_SIZE);
    expect(vocab['<|startoftext|>']).toBe(49406);
    expect(vocab['<|endoftext|>']).toBe(49407);
    expect(vocab['!']).toBe(0);
  });

  // SD 2.x's pad token "!" is split out of the text as a special token (transformers does so; see
  // tokenizer.test.ts), which OpenAI's tokenizer has no notion of: those families are compared on
  // the prompts without "!".
  it.each(FAMILIES)('%s: gives the ids of OpenAI\'s tokenizer for the reference prompts', (family) => {
    const tok = bundledTokenizer(family);
    expect(vocabSize(tok)).toBe(CLIP_VOCAB_SIZE);
    const sd2 = SD_FAMILIES[family].textEncoder === 'sd2';
    const cases = reference.cases.filter((c) => !(sd2 && c.text.includes('!')));
    expect(cases.length).toBeGreaterThanOrEqual(sd2 ? 9 : 10);
    for (const c of cases) {
      expect(tokenize(tok, c.text), c.text).toEqual(c.tokens);
      const { ids } = encode(tok, c.text, { padding: 'none' });
      expect(ids, c.text).toEqual([49406, ...c.ids, 49407]);
    }
  });

  it('pads as each family does: SD 1.x with <|endoftext|>, SD 2.x with "!" (id 0)', () => {
    expect(encode(bundledTokenizer('sd1'), 'a cat').ids.at(-1)).toBe(49407);
    expect(encode(bundledTokenizer('sd2-v'), 'a cat').ids.at(-1)).toBe(0);
  });
});

describe('bundled family configs', () => {
  it.each(FAMILIES)('%s: parses, with the architecture the family is known by', (family) => {
    const c = readConfigs(path.join(bundledConfigsDir(), family));
    const sd2 = SD_FAMILIES[family].textEncoder === 'sd2';
    expect(c.unet.in_channels).toBe(family.endsWith('inpaint') ? 9 : 4);
    expect(c.unet.cross_attention_dim).toBe(sd2 ? 1024 : 768);
    expect(c.textEncoder.hidden_size).toBe(sd2 ? 1024 : 768);
    expect(c.textEncoder.num_hidden_layers).toBe(sd2 ? 23 : 12);
    expect(c.scheduler.prediction_type).toBe(family === 'sd2-v' ? 'v_prediction' : 'epsilon');
    expect(c.vae.block_out_channels).toEqual([128, 256, 512, 512]);
  });

  it("a single file of a model with CLIP's vocabulary stores its configs and tokenizer settings in a few KB of metadata", () => {
    const metadata = singleFileMetadata(readConfigs(path.join(bundledConfigsDir(), 'sd2-v')), bundledTokenizer('sd2-v'));
    expect(Object.values(metadata).join('').length).toBeLessThan(4096);
    expect(JSON.parse(metadata['painter_tokenizer']!)).not.toHaveProperty('vocab');
  });

  it('ship in the package, with CLIP\'s licence beside its vocabulary', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).toContain('fixtures');
    expect(fs.readFileSync(path.join(bundledConfigsDir(), 'clip', 'LICENSE'), 'utf8')).toMatch(/MIT License[\s\S]*OpenAI/);
  });
});

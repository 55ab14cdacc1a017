/**
 * Textual Inversion interop with diffusers on tiny-sd-a (fixtures/interop/tiny-sd-a): the three
 * file layouts (diffusers, AUTOMATIC1111 .pt, kohya safetensors) read to the same vectors,
 * token ids and table resize as load_textual_inversion, the ti_kitty / ti_kitty_2v generations,
 * painter's own files, and the errors for damaged or unusable files.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { applyEmbeddings, expandPrompt, TOKEN_EMBEDDING_KEY, type EmbeddedModel } from '../src/core/embeddings.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { tokenize, vocabSize } from '../src/core/tokenizer/clip-tokenizer.js';
import { PainterError } from '../src/errors.js';
import { readEmbeddingFile, writeEmbeddingFile } from '../src/io/embeddings.js';
import { loadModel } from '../src/io/load-model.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { ref, TINY_SD_A, useBackend } from './helpers.js';
import { compareCase, disposeGeneration, generate, INTEROP, loadInteropReference, storedZip, torchSave, type CaseErrors } from './interop-helpers.js';

const TI = path.join(INTEROP, 'textual_inversion');
const FILES = {
  '<kitty>': { diffusers: 'diffusers/kitty/learned_embeds.safetensors', a1111: 'a1111/kitty.pt', kohya: 'kohya/kitty.safetensors' },
  '<kitty-2v>': { diffusers: 'diffusers/kitty-2v/learned_embeds.safetensors', a1111: 'a1111/kitty-2v.pt', kohya: 'kohya/kitty-2v.safetensors' },
} as const;
type Token = keyof typeof FILES;
type Layout = keyof (typeof FILES)[Token];
const file = (token: Token, layout: Layout) => path.join(TI, FILES[token][layout]);
/** Reads both embeddings of a layout, giving the token as diffusers' `token=` does where needed. */
const readLayout = (layout: Layout) =>
  (['<kitty>', '<kitty-2v>'] as const).map((t) => readEmbeddingFile(file(t, layout), layout === 'diffusers' ? {} : { token: t }));

let base: StableDiffusion;
let reference: Map<string, tf.Tensor>;
let tmp: string;
const measured: Record<string, CaseErrors> = {};

beforeAll(async () => {
  await useBackend();
  base = loadModel(TINY_SD_A);
  reference = loadInteropReference();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-ti-'));
});
afterAll(() => {
  disposeModel(base);
  tf.dispose([...reference.values()]);
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log('TI interop errors:', JSON.stringify(measured));
});

describe('reading embedding files', () => {
  it('reads the diffusers, A1111 .pt and kohya layouts to the reference vectors', () => {
    for (const token of ['<kitty>', '<kitty-2v>'] as const) {
      const expected = Array.from(ref(reference, `ti.${token}.vectors`).dataSync());
      const rows = token === '<kitty>' ? 1 : 2;
      const d = readEmbeddingFile(file(token, 'diffusers'));
      expect([d.token, d.format, d.shape]).toEqual([token, 'diffusers', [rows, 32]]);
      expect(d.metadata).toEqual({ format: 'pt' });
      const a = readEmbeddingFile(file(token, 'a1111'));
      const stem = token.slice(1, -1);
      // A1111 triggers an embedding by its file name: that is the default token.
      expect([a.token, a.format, a.shape]).toEqual([stem, 'a1111-pt', [rows, 32]]);
      expect(a.metadata).toMatchObject({ name: stem, step: '0' });
      const k = readEmbeddingFile(file(token, 'kohya'));
      expect([k.token, k.format, k.shape]).toEqual([stem, 'a1111-safetensors', [rows, 32]]);
      for (const e of [d, a, k]) expect(Array.from(e.vectors)).toEqual(expected);
      expect(readEmbeddingFile(file(token, 'a1111'), { token: '<x>' }).token).toBe('<x>');
    }
  });
  it("reads diffusers' torch.save learned_embeds.bin (also from strided tensors)", () => {
    const src = readEmbeddingFile(file('<kitty-2v>', 'diffusers'));
    for (const transposed of [false, true]) {
      const bin = path.join(tmp, `learned_embeds-${transposed}.bin`);
      fs.writeFileSync(bin, torchSave('archive', { '<kitty-2v>': { shape: src.shape, data: src.vectors } }, transposed));
      const e = readEmbeddingFile(bin);
      expect([e.token, e.format, e.shape]).toEqual(['<kitty-2v>', 'diffusers', [2, 32]]);
      expect(Array.from(e.vectors)).toEqual(Array.from(src.vectors));
    }
  });
});

describe('applying embeddings as diffusers load_textual_inversion', () => {
  let applied: EmbeddedModel;
  beforeAll(() => {
    applied = applyEmbeddings(base, readLayout('diffusers'));
  });
  afterAll(() => applied.dispose());

  it('assigns ids 897, 898, 899 and shrinks the 1000-row table to 900 rows', () => {
    const ids = Object.fromEntries(applied.tokens.flatMap((t) => t.tokens.map((name, i) => [name, t.ids[i]])));
    expect(ids).toEqual({ '<kitty>': 897, '<kitty-2v>': 898, '<kitty-2v>_1': 899 });
    expect(vocabSize(applied.model.tokenizer)).toBe(900);
    const table = applied.model.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!;
    expect(table.shape).toEqual([900, 32]);
    expect(applied.model.textEncoder.config.vocab_size).toBe(900);
    const old = base.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!;
    expect(Array.from(table.slice([0, 0], [897, 32]).dataSync())).toEqual(Array.from(old.slice([0, 0], [897, 32]).dataSync()));
    expect(Array.from(table.slice([897, 0], [1, 32]).dataSync())).toEqual(Array.from(ref(reference, 'ti.<kitty>.vectors').dataSync()));
    expect(Array.from(table.slice([898, 0], [2, 32]).dataSync())).toEqual(Array.from(ref(reference, 'ti.<kitty-2v>.vectors').dataSync()));
  });

  it('leaves the caller model untouched and shares its other weights', () => {
    expect(vocabSize(base.tokenizer)).toBe(897);
    expect(base.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!.shape).toEqual([1000, 32]);
    expect(base.textEncoder.config.vocab_size).toBe(1000);
    expect(tokenize(base.tokenizer, '<kitty>')).not.toEqual(['<kitty>']);
    expect(applied.model.unet.params).toBe(base.unet.params);
    const key = 'text_model.encoder.layers.0.self_attn.q_proj.weight';
    expect(applied.model.textEncoder.params.get(key)).toBe(base.textEncoder.params.get(key));
  });

  it('expands multi-vector tokens in prompts (maybe_convert_prompt)', () => {
    const tok = applied.model.tokenizer;
    expect(expandPrompt('a photo of <kitty-2v> on a table', tok)).toBe('a photo of <kitty-2v> <kitty-2v>_1 on a table');
    expect(expandPrompt('a photo of <kitty>', tok)).toBe('a photo of <kitty>');
    expect(expandPrompt('<kitty-2v> and <kitty-2v>', tok)).toBe('<kitty-2v> <kitty-2v>_1 and <kitty-2v> <kitty-2v>_1');
  });

  it('reproduces ti_kitty and ti_kitty_2v (ids exact, embeds 1e-4, latents 1e-3, image 2/255)', () => {
    for (const [name, prompt] of [
      ['ti_kitty', 'a photo of <kitty>'],
      ['ti_kitty_2v', 'a photo of <kitty-2v> on a table'],
    ] as const) {
      const g = generate(applied.model, prompt, reference);
      const e = compareCase(g, reference, name);
      measured[name] = e;
      disposeGeneration(g);
      expect(e.idsEqual, name).toBe(true);
      expect(e.negativeIdsEqual, name).toBe(true);
      expect(e.promptEmbeds, name).toBeLessThan(1e-4);
      expect(e.negativeEmbeds, name).toBeLessThan(1e-4);
      expect(e.latents!, name).toBeLessThan(1e-3);
      expect(e.imagePixels!, name).toBeLessThan(2);
    }
  });

  it('gives the same tokens, table and prompt embeddings with the A1111 and kohya files', () => {
    const table = applied.model.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!;
    for (const layout of ['a1111', 'kohya'] as const) {
      const other = applyEmbeddings(base, readLayout(layout));
      try {
        expect(other.tokens.map((t) => t.ids)).toEqual(applied.tokens.map((t) => t.ids));
        expect(Array.from(other.model.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!.dataSync())).toEqual(Array.from(table.dataSync()));
        for (const [name, prompt] of [
          ['ti_kitty', 'a photo of <kitty>'],
          ['ti_kitty_2v', 'a photo of <kitty-2v> on a table'],
        ] as const) {
          const g = generate(other.model, prompt, reference, false);
          const e = compareCase(g, reference, name);
          measured[`${name}(${layout})`] = e;
          disposeGeneration(g);
          expect(e.idsEqual).toBe(true);
          expect(e.promptEmbeds).toBeLessThan(1e-4);
        }
      } finally {
        other.dispose();
      }
    }
  });
});

describe('tensor bookkeeping', () => {
  it('dispose() frees exactly what applyEmbeddings created', () => {
    const embeddings = readLayout('diffusers');
    applyEmbeddings(base, embeddings).dispose();
    const before = tf.memory().numTensors;
    const a = applyEmbeddings(base, embeddings);
    expect(tf.memory().numTensors).toBe(before + 1);
    a.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('stacks: embeddings applied to an embedded model continue the ids', () => {
    const [kitty, kitty2v] = readLayout('diffusers');
    const first = applyEmbeddings(base, [kitty!]);
    const second = applyEmbeddings(first.model, [kitty2v!]);
    expect(second.tokens[0]!.ids).toEqual([898, 899]);
    expect(second.model.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!.shape).toEqual([900, 32]);
    second.dispose();
    first.dispose();
  });
});

describe('painter embedding files', () => {
  it('writes the diffusers layout (one key = token) that reads back as painter format', async () => {
    const src = readEmbeddingFile(file('<kitty-2v>', 'diffusers'));
    const out = path.join(tmp, 'kitty-2v', 'learned_embeds.safetensors');
    await writeEmbeddingFile(out, '<kitty-2v>', tf.tensor2d(src.vectors, src.shape), { metadata: { base_model: 'tiny-sd-a', steps: '0', init_token: 'cat' } });
    const back = readEmbeddingFile(out);
    expect([back.token, back.format, back.shape]).toEqual(['<kitty-2v>', 'painter', [2, 32]]);
    expect(Array.from(back.vectors)).toEqual(Array.from(src.vectors));
    expect(back.metadata).toMatchObject({ format: 'pt', base_model: 'tiny-sd-a', init_token: 'cat' });
    // Same tensor (key, shape, bytes) as diffusers' own file: load_textual_inversion reads it.
    const mine = loadSafetensors(out).tensors;
    const theirs = loadSafetensors(file('<kitty-2v>', 'diffusers')).tensors;
    expect([...mine.keys()]).toEqual([...theirs.keys()]);
    expect(mine.get('<kitty-2v>')).toEqual(theirs.get('<kitty-2v>'));
  });

  it('writes the kohya/A1111 layout (emb_params)', async () => {
    const src = readEmbeddingFile(file('<kitty>', 'diffusers'));
    const out = path.join(tmp, 'kitty.safetensors');
    await writeEmbeddingFile(out, '<kitty>', { data: src.vectors, shape: src.shape }, { format: 'a1111' });
    const back = readEmbeddingFile(out);
    expect([back.token, back.format]).toEqual(['kitty', 'a1111-safetensors']);
    expect(Array.from(back.vectors)).toEqual(Array.from(src.vectors));
    const theirs = loadSafetensors(file('<kitty>', 'kohya')).tensors;
    expect(loadSafetensors(out).tensors).toEqual(theirs);
  });
});

describe('errors name the file', () => {
  const expectError = (fn: () => unknown, ...parts: (string | RegExp)[]) => {
    let error: unknown;
    try {
      fn();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PainterError);
    for (const p of parts) expect((error as Error).message).toMatch(p);
  };

  it('missing, truncated and damaged files', () => {
    expectError(() => readEmbeddingFile(path.join(tmp, 'nope.pt')), 'nope.pt', /cannot read/);
    const pt = fs.readFileSync(file('<kitty>', 'a1111'));
    const cut = path.join(tmp, 'cut.pt');
    fs.writeFileSync(cut, pt.subarray(0, 500));
    expectError(() => readEmbeddingFile(cut), 'cut.pt', /truncated/);
    const damaged = Buffer.from(pt);
    // Flip one byte of the stored vectors (float32, little-endian, uncompressed).
    const vectors = ref(reference, 'ti.<kitty>.vectors').dataSync() as Float32Array;
    const at = damaged.indexOf(Buffer.from(vectors.buffer, vectors.byteOffset, vectors.byteLength));
    expect(at).toBeGreaterThan(0);
    damaged[at + 5]! ^= 0xff;
    const bad = path.join(tmp, 'damaged.pt');
    fs.writeFileSync(bad, damaged);
    expectError(() => readEmbeddingFile(bad), 'damaged.pt', /CRC-32|damaged/);
    const st = fs.readFileSync(file('<kitty>', 'diffusers'));
    const cutSt = path.join(tmp, 'cut.safetensors');
    fs.writeFileSync(cutSt, st.subarray(0, st.length - 10));
    expectError(() => readEmbeddingFile(cutSt), 'cut.safetensors');
  });

  it('refuses pickles that reference code', () => {
    const evil = path.join(tmp, 'evil.pt');
    const pickle = Buffer.concat([Buffer.from([0x80, 2]), Buffer.from('cos\nsystem\n'), Buffer.from([0x29, 0x52, 0x2e])]);
    fs.writeFileSync(evil, storedZip({ 'evil/data.pkl': pickle, 'evil/version': Buffer.from('3\n') }));
    expectError(() => readEmbeddingFile(evil), 'evil.pt', 'os.system');
    const build = path.join(tmp, 'build.pt');
    fs.writeFileSync(build, storedZip({ 'build/data.pkl': Buffer.from([0x80, 2, 0x7d, 0x7d, 0x62, 0x2e]) }));
    expectError(() => readEmbeddingFile(build), 'build.pt', /opcode 0x62/);
  });

  it('ambiguous files', () => {
    const two = path.join(tmp, 'two.safetensors');
    fs.writeFileSync(two, fs.readFileSync(path.join(INTEROP, 'lora', 'kohya', 'lora_kohya.safetensors')));
    expectError(() => readEmbeddingFile(two), 'two.safetensors', /ambiguous/);
  });

  it('wrong width and token clashes', () => {
    const narrow = { token: '<narrow>', vectors: new Float32Array(16), shape: [1, 16] as [number, number], file: 'narrow.safetensors' };
    expectError(() => applyEmbeddings(base, [narrow]), 'narrow.safetensors', /16 wide/, /32 wide/);
    const [kitty] = readLayout('diffusers');
    expectError(() => applyEmbeddings(base, [kitty!, kitty!]), 'learned_embeds.safetensors', '<kitty>');
    expectError(() => applyEmbeddings(base, [{ ...kitty!, token: 'cat</w>' }]), 'learned_embeds.safetensors', /already in the tokenizer/);
    const applied = applyEmbeddings(base, [kitty!]);
    expectError(() => applyEmbeddings(applied.model, [kitty!]), /already in the tokenizer/);
    applied.dispose();
  });
});

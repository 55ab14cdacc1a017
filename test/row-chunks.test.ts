/**
 * Weights larger than a device binds at once (WebGPU's maxStorageBufferBindingSize: lavapipe 128
 * MiB, below SD-1.5's 152 MB token table) are held in row chunks. Here the limit is lowered so
 * tiny-sd-a's 1000×32 table splits into four chunks on any backend, and everything that touches
 * the table must give what the whole table gives: the text encoder (against diffusers'
 * reference), Textual Inversion's init and gradient, embeddings from other tools (diffusers'
 * ti_kitty generation), gradients of a trained table, and saved files (one key, same bytes).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { setTensorByteLimit } from '../src/backend/webgpu.js';
import { applyEmbeddings, TOKEN_EMBEDDING_KEY } from '../src/core/embeddings.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { clipTextForward, clipTextParamShapes } from '../src/core/models/clip-text.js';
import { chunkKey, gatherRows, meanRows, rowParts, sliceRows } from '../src/core/row-chunks.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { loadModel } from '../src/io/load-model.js';
import { loadWeights } from '../src/io/load-weights.js';
import { disposeParams } from '../src/core/params.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { saveModel } from '../src/io/save-model.js';
import { createInversion } from '../src/train/textual-inversion.js';
import { loadReference, ref, relError, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';
import { compareCase, disposeGeneration, generate, INTEROP, loadInteropReference } from './interop-helpers.js';

/** 312 rows of 32 floats per chunk: the 1000-row table becomes chunks at 0, 312, 624, 936. */
const LIMIT = 40_000;

let whole: StableDiffusion;
let chunked: StableDiffusion;
let tmp: string;

/**
 * `m` with its text encoder loaded again under the lowered limit (only the text encoder: the
 * UNet's weights are over it too, and are refused as they cannot be split).
 */
function withChunkedText(m: StableDiffusion): StableDiffusion {
  setTensorByteLimit(LIMIT);
  try {
    const params = loadWeights([path.join(TINY_SD_A, 'text_encoder', 'model.safetensors')], clipTextParamShapes(m.textEncoder.config), 'text_encoder');
    return { ...m, textEncoder: { config: m.textEncoder.config, params } };
  } finally {
    setTensorByteLimit(undefined);
  }
}

beforeAll(async () => {
  await useBackend();
  whole = loadModel(TINY_SD_A);
  chunked = withChunkedText(whole);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-chunks-'));
});
afterEach(() => setTensorByteLimit(undefined));
afterAll(() => {
  disposeModel(whole);
  disposeParams(chunked.textEncoder.params);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

describe('a token table over the binding limit', () => {
  it('refuses a weight over the limit that cannot be split, naming it', () => {
    setTensorByteLimit(LIMIT);
    expect(() => loadModel(TINY_SD_A)).toThrow(/weight "[^"]+" is 0\.1 MiB, more than this device binds at once \(0\.0 MiB\)/);
  });

  it('loads as four row chunks, none over the limit', () => {
    const p = chunked.textEncoder.params;
    expect(p.has(TOKEN_EMBEDDING_KEY)).toBe(false);
    const parts = rowParts(p, TOKEN_EMBEDDING_KEY);
    expect(parts.map((x) => [x.start, x.tensor.shape[0]])).toEqual([
      [0, 312],
      [312, 312],
      [624, 312],
      [936, 64],
    ]);
    for (const x of parts) expect(x.tensor.size * 4).toBeLessThanOrEqual(LIMIT);
    expect(p.has(chunkKey(TOKEN_EMBEDDING_KEY, 936))).toBe(true);
  });

  it("encodes prompts as diffusers' CLIPTextModel does (1e-4) and as the whole table does", () => {
    const reference = loadReference('text_encoder.safetensors');
    const ids = ref(reference, 'input_ids').toInt() as tf.Tensor2D;
    const a = clipTextForward(chunked.textEncoder.params, chunked.textEncoder.config, ids).lastHiddenState;
    const b = clipTextForward(whole.textEncoder.params, whole.textEncoder.config, ids).lastHiddenState;
    expect(relError(a, ref(reference, 'last_hidden_state'))).toBeLessThan(1e-4);
    expect(maxAbsDiff(a, b)).toBe(0);
    tf.dispose([a, b, ids, ...reference.values()]);
  });

  it('gathers, slices and averages rows across chunk borders like one tensor', () => {
    const parts = rowParts(chunked.textEncoder.params, TOKEN_EMBEDDING_KEY);
    const table = whole.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!;
    const ids = tf.tensor2d([[0, 311, 312, 623, 624, 999]], [1, 6], 'int32');
    const pairs: [tf.Tensor, tf.Tensor][] = [
      [gatherRows(parts, ids), tf.gather(table, ids)],
      [sliceRows(parts, 300, 400), table.slice([300, 0], [400, -1])],
      [meanRows(parts, 897), tf.mean(table.slice([0, 0], [897, -1]), 0)],
    ];
    expect(maxAbsDiff(pairs[0]![0], pairs[0]![1])).toBe(0);
    expect(maxAbsDiff(pairs[1]![0], pairs[1]![1])).toBe(0);
    expect(maxAbsDiff(pairs[2]![0], pairs[2]![1])).toBeLessThan(1e-6);
    tf.dispose([ids, ...pairs.flat()]);
  });

  it('gives each chunk the gradient rows of the whole table (a trained text encoder)', () => {
    const ids = [[0, 5, 311, 312, 700, 999, 2, 2]];
    const parts = rowParts(chunked.textEncoder.params, TOKEN_EMBEDDING_KEY).map((x) => x.tensor);
    const lossOf = (m: StableDiffusion, tables: tf.Tensor[]) => {
      const p = new Map(m.textEncoder.params);
      if (tables.length === 1) p.set(TOKEN_EMBEDDING_KEY, tables[0]!);
      else tables.forEach((t, i) => p.set(chunkKey(TOKEN_EMBEDDING_KEY, [0, 312, 624, 936][i]!), t));
      return tf.sum(tf.square(clipTextForward(p, m.textEncoder.config, ids).lastHiddenState)) as tf.Scalar;
    };
    const gWhole = tf.grads((t: tf.Tensor) => lossOf(whole, [t]))([whole.textEncoder.params.get(TOKEN_EMBEDDING_KEY)!]);
    const gParts = tf.grads((...ts: tf.Tensor[]) => lossOf(chunked, ts))(parts);
    const joined = tf.concat(gParts, 0);
    expect(relError(joined, gWhole[0]!)).toBeLessThan(1e-6);
    tf.dispose([...gWhole, ...gParts, joined]);
  });

  it('initialises a Textual Inversion token from a word or the mean as the whole table does', () => {
    const rgb = Buffer.from(Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 37) % 256));
    const images = [{ file: 'x.png', width: 32, height: 32, rgb }];
    for (const initToken of ['cat', undefined]) {
      const settings = { ...TINY_INVERT_SETTINGS, token: '<t>', initToken };
      const inits = [false, true].map((split) => {
        // Fresh models: createInversion adds the token to the model's tokenizer.
        const m = loadModel(TINY_SD_A);
        const used = split ? withChunkedText(m) : m;
        const inv = createInversion(used, images, settings);
        const init = inv.rows.arraySync();
        inv.dispose();
        if (split) disposeParams(used.textEncoder.params);
        disposeModel(m);
        return init;
      });
      const [a, b] = inits.map((x) => tf.tensor(x));
      expect(maxAbsDiff(a!, b!), String(initToken)).toBeLessThan(initToken ? 1e-12 : 1e-6);
      tf.dispose([a!, b!]);
    }
  });

  it("reproduces diffusers' ti_kitty generation with an A1111 embedding added to a chunked table", () => {
    const reference = loadInteropReference();
    const e = readEmbeddingFile(path.join(INTEROP, 'textual_inversion', 'a1111', 'kitty.pt'), { token: '<kitty>' });
    const applied = applyEmbeddings(chunked, [e]);
    const parts = rowParts(applied.model.textEncoder.params, TOKEN_EMBEDDING_KEY);
    expect(parts.map((x) => [x.start, x.tensor.shape[0]])).toEqual([
      [0, 312],
      [312, 312],
      [624, 273],
      [897, 1],
    ]);
    const g = generate(applied.model, 'a photo of <kitty>', reference);
    const errors = compareCase(g, reference, 'ti_kitty');
    expect(errors.idsEqual).toBe(true);
    expect(errors.promptEmbeds).toBeLessThan(1e-4);
    expect(errors.latents!).toBeLessThan(1e-3);
    disposeGeneration(g);
    applied.dispose();
    // The chunks the embedded model shares with the base survive its disposal.
    expect(rowParts(chunked.textEncoder.params, TOKEN_EMBEDDING_KEY).every((x) => !x.tensor.isDisposed)).toBe(true);
    tf.dispose([...reference.values()]);
  });

  it('saves one tensor under the diffusers key, byte for byte the loaded one', async () => {
    const out = path.join(tmp, 'saved');
    await saveModel(chunked, out);
    const file = 'text_encoder/model.safetensors';
    const saved = loadSafetensors(path.join(out, file)).tensors;
    const original = loadSafetensors(path.join(TINY_SD_A, file)).tensors;
    expect([...saved.keys()].sort()).toEqual([...original.keys()].sort());
    const a = saved.get(TOKEN_EMBEDDING_KEY)!;
    const b = original.get(TOKEN_EMBEDDING_KEY)!;
    expect(a.shape).toEqual(b.shape);
    expect(Buffer.compare(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength), Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength))).toBe(0);
  });
});

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLIP_TEXT_IGNORED_KEYS,
  clipTextForward,
  clipTextParamShapes,
  eosPositions,
  parseClipTextConfig,
  resizeTokenEmbedding,
  type ClipTextConfig,
} from '../src/core/models/clip-text.js';
import { disposeParams, initParams, param, type Params } from '../src/core/params.js';
import { PainterError } from '../src/errors.js';
import { loadWeights, readJson } from '../src/io/load-weights.js';
import { loadSafetensors, writeSafetensors, type HostTensor, type TensorToWrite } from '../src/io/safetensors.js';
import { TINY_SD_A, loadReference, ref, relError, useBackend } from './helpers.js';

const CONFIG_FILE = path.join(TINY_SD_A, 'text_encoder', 'config.json');
const WEIGHTS_FILE = path.join(TINY_SD_A, 'text_encoder', 'model.safetensors');

let config: ClipTextConfig;
let params: Params;
let reference: Map<string, tf.Tensor>;
let tmp: string;

beforeAll(async () => {
  await useBackend();
  config = parseClipTextConfig(readJson(CONFIG_FILE), CONFIG_FILE);
  params = loadWeights([WEIGHTS_FILE], clipTextParamShapes(config), 'text encoder', { ignore: CLIP_TEXT_IGNORED_KEYS });
  reference = loadReference('text_encoder.safetensors');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-clip-'));
});

afterAll(() => {
  disposeParams(params);
  for (const t of reference.values()) t.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function ids(): tf.Tensor2D {
  return ref(reference, 'input_ids') as tf.Tensor2D;
}

/** Rewrites the fixture checkpoint with `edit` applied, into the temp folder. */
async function editedCheckpoint(name: string, edit: (m: Map<string, TensorToWrite>) => void): Promise<string> {
  const m = new Map<string, TensorToWrite>();
  for (const [k, t] of loadSafetensors(WEIGHTS_FILE).tensors) m.set(k, t as HostTensor & TensorToWrite);
  edit(m);
  const file = path.join(tmp, name);
  await writeSafetensors(file, m);
  return file;
}

describe('parseClipTextConfig', () => {
  it('reads the tiny-sd-a config', () => {
    expect(config).toMatchObject({ hidden_size: 32, num_hidden_layers: 5, num_attention_heads: 4, hidden_act: 'quick_gelu', eos_token_id: 2 });
  });

  it('names the file and every bad field', () => {
    const bad = { ...(readJson(CONFIG_FILE) as object), hidden_size: undefined, hidden_act: 'relu6' };
    expect(() => parseClipTextConfig(bad, 'x/config.json')).toThrow(PainterError);
    expect(() => parseClipTextConfig(bad, 'x/config.json')).toThrow(/x\/config\.json.*"hidden_size" is missing.*"hidden_act"/);
    expect(() => parseClipTextConfig({ ...(readJson(CONFIG_FILE) as object), num_attention_heads: 5 }, 'c.json')).toThrow(/divisible/);
    expect(() => parseClipTextConfig([], 'c.json')).toThrow(/c\.json/);
  });
});

describe('clipTextForward', () => {
  it('matches transformers (last_hidden_state, pooler_output)', () => {
    const errs = tf.tidy(() => {
      const out = clipTextForward(params, config, ids());
      expect(out.lastHiddenState.shape).toEqual([3, 77, 32]);
      expect(out.pooled.shape).toEqual([3, 32]);
      return {
        last: relError(out.lastHiddenState, ref(reference, 'last_hidden_state')),
        pooled: relError(out.pooled, ref(reference, 'pooler_output')),
      };
    });
    expect(errs.last).toBeLessThan(1e-4);
    expect(errs.pooled).toBeLessThan(1e-4);
  });

  it('clip skip returns final_layer_norm(hidden_states[-(k+1)]), unlike the last layer', () => {
    tf.tidy(() => {
      const full = clipTextForward(params, config, ids(), { outputHiddenStates: true });
      expect(full.hiddenStates).toHaveLength(config.num_hidden_layers + 1);
      const skipped = clipTextForward(params, config, ids(), { skipLastLayers: 1 });
      expect(skipped.lastHiddenState.shape).toEqual([3, 77, 32]);
      const penultimate = full.hiddenStates![config.num_hidden_layers - 1]!;
      const expected = tf.add(
        tf.mul(
          tf.div(tf.sub(penultimate, tf.mean(penultimate, -1, true)), tf.sqrt(tf.add(tf.moments(penultimate, -1, true).variance, config.layer_norm_eps))),
          param(params, 'text_model.final_layer_norm.weight'),
        ),
        param(params, 'text_model.final_layer_norm.bias'),
      );
      expect(relError(skipped.lastHiddenState, expected)).toBeLessThan(1e-5);
      expect(relError(skipped.lastHiddenState, full.lastHiddenState)).toBeGreaterThan(1e-2);
      const noSkip = clipTextForward(params, config, ids(), { skipLastLayers: 0 });
      expect(relError(noSkip.lastHiddenState, full.lastHiddenState)).toBe(0);
    });
    expect(() => clipTextForward(params, config, ids(), { skipLastLayers: config.num_hidden_layers })).toThrow(PainterError);
  });

  it('runs a gelu config with random weights', () => {
    const cfg = parseClipTextConfig({ ...(readJson(CONFIG_FILE) as object), hidden_act: 'gelu', num_hidden_layers: 2, eos_token_id: 999 }, 'gelu.json');
    const p = initParams(clipTextParamShapes(cfg), 7);
    try {
      tf.tidy(() => {
        const x = tf.tensor2d([[0, 5, 6, 999, 999, 999]], [1, 6], 'int32');
        const out = clipTextForward(p, cfg, x);
        expect(out.lastHiddenState.shape).toEqual([1, 6, 32]);
        expect(Number.isFinite(tf.sum(out.lastHiddenState).dataSync()[0])).toBe(true);
        // Non-legacy EOS: pooled is the first position holding eos_token_id (3).
        expect(relError(out.pooled, out.lastHiddenState.slice([0, 3, 0], [1, 1, 32]).reshape([1, 32]))).toBe(0);
        const quick = clipTextForward(p, { ...cfg, hidden_act: 'quick_gelu' }, x);
        expect(relError(quick.lastHiddenState, out.lastHiddenState)).toBeGreaterThan(1e-4);
      });
    } finally {
      disposeParams(p);
    }
  });

  it('picks the pooling position by transformers rule', () => {
    // Legacy eos_token_id == 2: first argmax of the ids; otherwise first id == eos (0 if none).
    expect(eosPositions([0, 7, 9, 9, 1, 3, 1, 1], 2, 4, 2)).toEqual([2, 1]);
    expect(eosPositions([0, 7, 5, 5, 3, 1, 5, 1], 2, 4, 5)).toEqual([2, 2]);
    expect(eosPositions([0, 7, 6, 6], 1, 4, 5)).toEqual([0]);
  });

  it('rejects ids outside the vocabulary', () => {
    const x = tf.tensor2d([[0, 1000]], [1, 2], 'int32');
    expect(() => clipTextForward(params, config, x)).toThrow(/vocabulary of 1000/);
    x.dispose();
  });

  it('does not leak tensors', () => {
    const once = (): void => {
      const out = clipTextForward(params, config, ids());
      out.lastHiddenState.dispose();
      out.pooled.dispose();
      tf.tidy(() => void clipTextForward(params, config, ids(), { outputHiddenStates: true, skipLastLayers: 1 }));
    };
    once();
    const before = tf.memory().numTensors;
    once();
    once();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('token embedding training (Textual Inversion)', () => {
  it('differentiates w.r.t. the token table on wasm; only used rows get gradient', () => {
    expect(tf.getBackend()).toBe(process.env['PAINTER_TEST_BACKEND'] ?? 'wasm');
    const table = tf.variable(param(params, 'text_model.embeddings.token_embedding.weight').clone(), true, 'ti_table');
    try {
      const x = ids();
      const used = new Set(Array.from(x.dataSync()));
      const warm = (): void => {
        const { value, grads } = tf.variableGrads(() => tf.tidy(() => tf.sum(tf.square(clipTextForward(params, config, x, { tokenEmbedding: table }).lastHiddenState))) as tf.Scalar, [table]);
        value.dispose();
        for (const g of Object.values(grads)) g.dispose();
      };
      warm();
      const before = tf.memory().numTensors;
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(clipTextForward(params, config, x, { tokenEmbedding: table }).lastHiddenState)) as tf.Scalar, [table]);
      const g = grads['ti_table']!;
      expect(g.shape).toEqual([1000, 32]);
      const rowNorms = tf.tidy(() => tf.sum(tf.abs(g), 1).dataSync());
      for (let r = 0; r < 1000; r++) {
        if (used.has(r)) expect(rowNorms[r]).toBeGreaterThan(0);
        else expect(rowNorms[r]).toBe(0);
      }
      // Gradient of one row checked against a central finite difference along that row.
      const probe = 535;
      expect(used.has(probe)).toBe(true);
      const dir = tf.tidy(() => tf.oneHot(tf.tensor1d([probe], 'int32'), 1000).reshape([1000, 1]).mul(tf.randomNormal([1, 32], 0, 1, 'float32', 3)));
      const eps = 1e-2;
      const f = (s: number): number =>
        tf.tidy(() => tf.sum(tf.square(clipTextForward(params, config, x, { tokenEmbedding: tf.add(table, tf.mul(dir, s)) }).lastHiddenState)).dataSync()[0]!);
      const fd = (f(eps) - f(-eps)) / (2 * eps);
      const analytic = tf.tidy(() => tf.sum(tf.mul(g, dir)).dataSync()[0]!);
      expect(Math.abs(fd - analytic) / Math.abs(analytic)).toBeLessThan(2e-2);
      dir.dispose();
      value.dispose();
      g.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      table.dispose();
    }
  });

  it('grows the table with given rows and uses them', () => {
    const base = param(params, 'text_model.embeddings.token_embedding.weight');
    tf.tidy(() => {
      const init = tf.randomNormal([2, 32], 0, 1, 'float32', 11);
      const grown = resizeTokenEmbedding(base, 1002, init);
      expect(grown.shape).toEqual([1002, 32]);
      expect(relError(grown.slice([0, 0], [1000, 32]), base)).toBe(0);
      expect(relError(grown.slice([1000, 0], [2, 32]), init)).toBe(0);
      const meanRows = resizeTokenEmbedding(base, 1001);
      expect(relError(meanRows.slice([1000, 0], [1, 32]), tf.mean(base, 0, true))).toBeLessThan(1e-6);
      const one = resizeTokenEmbedding(base, 1003, base.slice([535, 0], [1, 32]).reshape([32]));
      expect(relError(one.slice([1002, 0], [1, 32]), base.slice([535, 0], [1, 32]))).toBe(0);
      // A prompt using the new token 1001 runs with the grown table (its row equals init[1]).
      const x = tf.tensor2d([[0, 1001, 2]], [1, 3], 'int32');
      const out = clipTextForward(params, config, x, { tokenEmbedding: grown });
      expect(out.lastHiddenState.shape).toEqual([1, 3, 32]);
      expect(() => resizeTokenEmbedding(base, 999)).toThrow(/shrink/);
      expect(() => resizeTokenEmbedding(base, 1002, tf.zeros([3, 32]))).toThrow(/expected \[2, 32\]/);
    });
  });
});

describe('strict loading', () => {
  it('ignores the position_ids buffer but rejects unknown, missing and misshapen weights', async () => {
    const withBuffer = await editedCheckpoint('buffer.safetensors', (m) =>
      m.set('text_model.embeddings.position_ids', { shape: [1, 77], data: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)) }),
    );
    disposeParams(loadWeights([withBuffer], clipTextParamShapes(config), 'text encoder', { ignore: CLIP_TEXT_IGNORED_KEYS }));

    const extra = await editedCheckpoint('extra.safetensors', (m) => m.set('text_model.encoder.layers.5.mlp.fc1.bias', { shape: [37], data: new Float32Array(37) }));
    expect(() => loadWeights([extra], clipTextParamShapes(config), 'text encoder', { ignore: CLIP_TEXT_IGNORED_KEYS })).toThrow(/unexpected.*layers\.5\.mlp\.fc1\.bias/);

    const missing = await editedCheckpoint('missing.safetensors', (m) => m.delete('text_model.final_layer_norm.bias'));
    expect(() => loadWeights([missing], clipTextParamShapes(config), 'text encoder', { ignore: CLIP_TEXT_IGNORED_KEYS })).toThrow(/missing.*final_layer_norm\.bias/);

    const wider = { ...config, intermediate_size: 64 };
    expect(() => loadWeights([WEIGHTS_FILE], clipTextParamShapes(wider), 'text encoder', { ignore: CLIP_TEXT_IGNORED_KEYS })).toThrow(/mlp\.fc1.*shape/);
  });
});

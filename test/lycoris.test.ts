/**
 * LyCORIS and DoRA LoRA files (kohya naming, as LyCORIS saves them): LoHa, LoKr, LoCon (conv
 * 1×1 and 3×3, Tucker cores) and DoRA modules built from hand-made small tensors merge to the
 * weights their formulas give, computed here independently in float64 (LyCORIS functional
 * loha.py / lokr.py / general.py, DoRA eq. 5); on tiny-sd-a a LoHa, LoKr or DoRA file changes the
 * image and only the weights it targets, scale 0 leaves the image identical; a file mixing the
 * types loads; unknown module types are refused naming the key.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { applyLora, disposeLora, type LoraWeights } from '../src/core/lora.js';
import { DORA_EPS } from '../src/core/lora-dora.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { PainterError } from '../src/errors.js';
import { torchToTfjs } from '../src/io/layout.js';
import { kohyaToModule, moduleToKohya, readLoraFile } from '../src/io/lora-files.js';
import { loadModel } from '../src/io/load-model.js';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { runCli, TINY_SD_A, useBackend } from './helpers.js';
import { disposeGeneration, generate, loadInteropReference, type Generation } from './interop-helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-lycoris-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await useBackend();
});

// --- hand-made tensors and float64 reference formulas (PyTorch layout, row-major) ---------------

interface Host {
  shape: number[];
  data: Float32Array;
}

let seed = 20240607;
function normal(): number {
  // mulberry32 + Box–Muller: deterministic test data.
  const u = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
}
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const rand = (shape: number[], scale = 0.5): Host => ({ shape, data: Float32Array.from({ length: size(shape) }, () => scale * normal()) });
const scalar = (v: number): Host => ({ shape: [], data: Float32Array.of(v) });
const f64 = (t: Host) => Float64Array.from(t.data);

/** [m, k] @ [k, n] in float64. */
function mm(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) out[i * n + j]! += a[i * k + p]! * b[p * n + j]!;
  return out;
}
const hadamard = (a: Float64Array, b: Float64Array) => a.map((v, i) => v * b[i]!);
const scaled = (a: Float64Array, s: number) => a.map((v) => v * s);
const transpose = (a: Float64Array, r: number, c: number) => Float64Array.from({ length: r * c }, (_, i) => a[(i % r) * c + Math.floor(i / r)]!);

/** Σ_{p,q} t[p, q, k] wa[p, o] wb[q, i] → [o, i, k] (LyCORIS rebuild_tucker), written out as loops. */
function tucker(t: Host, wa: Host, wb: Host): Float64Array {
  const [P, Q, kh, kw] = t.shape as [number, number, number, number];
  const [, O] = wa.shape as [number, number];
  const [, I] = wb.shape as [number, number];
  const K = kh * kw;
  const out = new Float64Array(O * I * K);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < I; i++)
      for (let k = 0; k < K; k++) {
        let s = 0;
        for (let p = 0; p < P; p++) for (let q = 0; q < Q; q++) s += t.data[(p * Q + q) * K + k]! * wa.data[p * O + o]! * wb.data[q * I + i]!;
        out[(o * I + i) * K + k] = s;
      }
  return out;
}

/** kron(A [a, c], B [b, d, …k]) → [a·b, c·d, …k], element by element. */
function kron(a: Host, b: Host): Float64Array {
  const [ra, ca] = a.shape as [number, number];
  const [rb, cb, ...k] = b.shape;
  const K = size(k);
  const out = new Float64Array(ra * rb! * ca * cb! * K);
  for (let i1 = 0; i1 < ra; i1++)
    for (let i2 = 0; i2 < rb!; i2++)
      for (let j1 = 0; j1 < ca; j1++)
        for (let j2 = 0; j2 < cb!; j2++)
          for (let s = 0; s < K; s++) out[((i1 * rb! + i2) * (ca * cb!) + j1 * cb! + j2) * K + s] = a.data[i1 * ca + j1]! * b.data[(i2 * cb! + j2) * K + s]!;
  return out;
}

/**
 * DoRA (eq. 5) blended at scale s: W + s·(m·(W+ΔW)/(‖W+ΔW‖+ε) − W) for W [out, in, …k]; the norm
 * runs over each output channel's [in, …k] ('out') or each input channel's [out, …k] ('in').
 */
function dora(w: Float64Array, delta: Float64Array, m: Float64Array, axis: 'out' | 'in', shape: number[], s: number): Float64Array {
  const [out, inn] = shape as [number, number];
  const k = w.length / (out * inn);
  const channel = (i: number) => (axis === 'out' ? Math.floor(i / (inn * k)) : Math.floor(i / k) % inn);
  const merged = w.map((v, i) => v + delta[i]!);
  const norm = new Float64Array(axis === 'out' ? out : inn);
  merged.forEach((v, i) => (norm[channel(i)]! += v * v));
  return merged.map((v, i) => w[i]! + s * ((m[channel(i)]! * v) / (Math.sqrt(norm[channel(i)]!) + DORA_EPS) - w[i]!));
}

// --- the cases ------------------------------------------------------------------------------------

interface Case {
  name: string;
  /** Target weight in PyTorch layout. */
  weight: number[];
  /** File parts by kohya suffix. */
  parts: Record<string, Host>;
  /** ΔW with the file's α/r, PyTorch layout. */
  delta(p: Record<string, Host>): Float64Array;
  /** DoRA modules: merged against a random base weight. */
  dora?: 'out' | 'in';
}

const LIN = [6, 8];
const CONV3 = [6, 4, 3, 3];
const CONV1 = [6, 4, 1, 1];

const CASES: Case[] = [
  {
    name: 'LoHa linear',
    weight: LIN,
    parts: { hada_w1_a: rand([6, 2]), hada_w1_b: rand([2, 8]), hada_w2_a: rand([6, 2]), hada_w2_b: rand([2, 8]), alpha: scalar(1) },
    delta: (p) => scaled(hadamard(mm(f64(p.hada_w1_a!), f64(p.hada_w1_b!), 6, 2, 8), mm(f64(p.hada_w2_a!), f64(p.hada_w2_b!), 6, 2, 8)), 1 / 2),
  },
  {
    name: 'LoHa conv 3×3',
    weight: CONV3,
    parts: { hada_w1_a: rand([6, 3]), hada_w1_b: rand([3, 36]), hada_w2_a: rand([6, 3]), hada_w2_b: rand([3, 36]), alpha: scalar(6) },
    delta: (p) => scaled(hadamard(mm(f64(p.hada_w1_a!), f64(p.hada_w1_b!), 6, 3, 36), mm(f64(p.hada_w2_a!), f64(p.hada_w2_b!), 6, 3, 36)), 6 / 3),
  },
  {
    name: 'LoHa conv 3×3 with Tucker cores',
    weight: CONV3,
    parts: { hada_w1_a: rand([2, 6]), hada_w1_b: rand([2, 4]), hada_w2_a: rand([2, 6]), hada_w2_b: rand([2, 4]), hada_t1: rand([2, 2, 3, 3]), hada_t2: rand([2, 2, 3, 3]), alpha: scalar(1) },
    delta: (p) => scaled(hadamard(tucker(p.hada_t1!, p.hada_w1_a!, p.hada_w1_b!), tucker(p.hada_t2!, p.hada_w2_a!, p.hada_w2_b!)), 1 / 2),
  },
  {
    name: 'LoHa without alpha (factor 1)',
    weight: LIN,
    parts: { hada_w1_a: rand([6, 4]), hada_w1_b: rand([4, 8]), hada_w2_a: rand([6, 4]), hada_w2_b: rand([4, 8]) },
    delta: (p) => hadamard(mm(f64(p.hada_w1_a!), f64(p.hada_w1_b!), 6, 4, 8), mm(f64(p.hada_w2_a!), f64(p.hada_w2_b!), 6, 4, 8)),
  },
  {
    name: 'LoKr linear, w1 full, w2 decomposed (γ = α / rank of w2)',
    weight: LIN,
    parts: { lokr_w1: rand([2, 2]), lokr_w2_a: rand([3, 1]), lokr_w2_b: rand([1, 4]), alpha: scalar(2) },
    delta: (p) => scaled(kron(p.lokr_w1!, { shape: [3, 4], data: Float32Array.from(mm(f64(p.lokr_w2_a!), f64(p.lokr_w2_b!), 3, 1, 4)) }), 2 / 1),
  },
  {
    name: 'LoKr linear, both factors full (no scaling, α ignored)',
    weight: LIN,
    parts: { lokr_w1: rand([2, 2]), lokr_w2: rand([3, 4]), alpha: scalar(7) },
    delta: (p) => kron(p.lokr_w1!, p.lokr_w2!),
  },
  {
    name: 'LoKr linear, w1 decomposed, w2 full (γ = α / rank of w1)',
    weight: LIN,
    parts: { lokr_w1_a: rand([2, 1]), lokr_w1_b: rand([1, 2]), lokr_w2: rand([3, 4]), alpha: scalar(3) },
    delta: (p) => scaled(kron({ shape: [2, 2], data: Float32Array.from(mm(f64(p.lokr_w1_a!), f64(p.lokr_w1_b!), 2, 1, 2)) }, p.lokr_w2!), 3),
  },
  {
    name: 'LoKr conv 3×3, w2 full 4-D',
    weight: CONV3,
    parts: { lokr_w1: rand([2, 2]), lokr_w2: rand([3, 2, 3, 3]), alpha: scalar(4) },
    delta: (p) => kron(p.lokr_w1!, p.lokr_w2!),
  },
  {
    name: 'LoKr conv 3×3, w2 decomposed over d·kh·kw',
    weight: CONV3,
    parts: { lokr_w1: rand([2, 2]), lokr_w2_a: rand([3, 2]), lokr_w2_b: rand([2, 18]), alpha: scalar(1) },
    delta: (p) => scaled(kron(p.lokr_w1!, { shape: [3, 2, 3, 3], data: Float32Array.from(mm(f64(p.lokr_w2_a!), f64(p.lokr_w2_b!), 3, 2, 18)) }), 1 / 2),
  },
  {
    name: 'LoKr conv 3×3, w2 with a Tucker core',
    weight: CONV3,
    parts: { lokr_w1: rand([2, 2]), lokr_w2_a: rand([2, 3]), lokr_w2_b: rand([2, 2]), lokr_t2: rand([2, 2, 3, 3]), alpha: scalar(1) },
    delta: (p) => scaled(kron(p.lokr_w1!, { shape: [3, 2, 3, 3], data: Float32Array.from(tucker(p.lokr_t2!, p.lokr_w2_a!, p.lokr_w2_b!)) }), 1 / 2),
  },
  {
    name: 'LoCon conv 3×3',
    weight: CONV3,
    parts: { 'lora_down.weight': rand([2, 4, 3, 3]), 'lora_up.weight': rand([6, 2, 1, 1]), alpha: scalar(1) },
    delta: (p) => scaled(mm(f64(p['lora_up.weight']!), f64(p['lora_down.weight']!), 6, 2, 36), 1 / 2),
  },
  {
    name: 'LoCon conv 1×1',
    weight: CONV1,
    parts: { 'lora_down.weight': rand([2, 4, 1, 1]), 'lora_up.weight': rand([6, 2, 1, 1]), alpha: scalar(4) },
    delta: (p) => scaled(mm(f64(p['lora_up.weight']!), f64(p['lora_down.weight']!), 6, 2, 4), 2),
  },
  {
    name: 'LoCon conv 3×3 with a Tucker core (lora_mid)',
    weight: CONV3,
    parts: { 'lora_down.weight': rand([2, 4, 1, 1]), 'lora_mid.weight': rand([2, 2, 3, 3]), 'lora_up.weight': rand([6, 2, 1, 1]), alpha: scalar(1) },
    delta: (p) => {
      const up = p['lora_up.weight']!;
      const upT = { shape: [2, 6], data: Float32Array.from(transpose(f64(up), 6, 2)) };
      return scaled(tucker(p['lora_mid.weight']!, upT, { shape: [2, 4], data: p['lora_down.weight']!.data }), 1 / 2);
    },
  },
  {
    name: 'DoRA on a linear LoRA (dora_scale [out, 1])',
    weight: LIN,
    parts: { 'lora_down.weight': rand([2, 8]), 'lora_up.weight': rand([6, 2]), alpha: scalar(1), dora_scale: { shape: [6, 1], data: Float32Array.from({ length: 6 }, () => 1 + 0.3 * normal()) } },
    delta: (p) => scaled(mm(f64(p['lora_up.weight']!), f64(p['lora_down.weight']!), 6, 2, 8), 1 / 2),
    dora: 'out',
  },
  {
    name: 'DoRA on a LoHa, per input channel (dora_scale [1, in])',
    weight: LIN,
    parts: { hada_w1_a: rand([6, 2]), hada_w1_b: rand([2, 8]), hada_w2_a: rand([6, 2]), hada_w2_b: rand([2, 8]), alpha: scalar(2), dora_scale: { shape: [1, 8], data: Float32Array.from({ length: 8 }, () => 1 + 0.3 * normal()) } },
    delta: (p) => hadamard(mm(f64(p.hada_w1_a!), f64(p.hada_w1_b!), 6, 2, 8), mm(f64(p.hada_w2_a!), f64(p.hada_w2_b!), 6, 2, 8)),
    dora: 'in',
  },
  {
    name: 'DoRA on a conv LoKr (dora_scale [out, 1, 1, 1])',
    weight: CONV3,
    parts: { lokr_w1: rand([2, 2]), lokr_w2: rand([3, 2, 3, 3]), dora_scale: { shape: [6, 1, 1, 1], data: Float32Array.from({ length: 6 }, () => 2 + 0.3 * normal()) } },
    delta: (p) => kron(p.lokr_w1!, p.lokr_w2!),
    dora: 'out',
  },
  {
    name: 'DoRA on a conv LoCon, per input channel (dora_scale [1, in, 1, 1])',
    weight: CONV3,
    parts: { 'lora_down.weight': rand([2, 4, 3, 3]), 'lora_up.weight': rand([6, 2, 1, 1]), alpha: scalar(1), dora_scale: { shape: [1, 4, 1, 1], data: Float32Array.from({ length: 4 }, () => 3 + 0.3 * normal()) } },
    delta: (p) => scaled(mm(f64(p['lora_up.weight']!), f64(p['lora_down.weight']!), 6, 2, 36), 1 / 2),
    dora: 'in',
  },
];

/** A distinct UNet module per case, named so kohya naming maps back to it. */
const moduleOf = (i: number, c: Case) => (c.weight.length === 4 ? `down_blocks.${i}.resnets.0.conv1` : `down_blocks.${i}.attentions.0.transformer_blocks.0.attn1.to_q`);

/** A stand-in model holding just the adapted weights (tfjs layout). */
function fakeModel(weights: Map<string, Host>): StableDiffusion {
  const params = new Map([...weights].map(([k, w]) => [k, tf.tensor(torchToTfjs(k, w).data, torchToTfjs(k, w).shape)]));
  return { unet: { config: {}, params }, textEncoder: { config: {}, params: new Map() } } as unknown as StableDiffusion;
}

/** A merged weight back in PyTorch layout, as float64. */
function torchLayout(t: tf.Tensor): Float64Array {
  return Float64Array.from(tf.tidy(() => (t.rank === 4 ? t.transpose([3, 2, 0, 1]) : t.transpose([1, 0])).dataSync()));
}

function relError(got: Float64Array, want: Float64Array): number {
  let num = 0;
  let den = 0;
  got.forEach((v, i) => {
    num = Math.max(num, Math.abs(v - want[i]!));
    den = Math.max(den, Math.abs(want[i]!));
  });
  return num / den;
}

async function writeKohya(file: string, modules: { module: string; parts: Record<string, Host> }[]): Promise<string> {
  const out: Record<string, TensorToWrite> = {};
  for (const m of modules) for (const [part, t] of Object.entries(m.parts)) out[`${moduleToKohya('unet', m.module)}.${part}`] = { shape: t.shape, data: t.data };
  await writeSafetensors(file, out, { ss_network_module: 'lycoris.kohya' });
  return file;
}

const measured: Record<string, number> = {};
afterAll(() => console.log('LyCORIS/DoRA merged-weight relative errors vs float64:', JSON.stringify(measured)));

describe('each module type reproduces its formula (float64 reference, 1e-6 relative)', () => {
  CASES.forEach((c, i) => {
    it(c.name, async () => {
      const module = moduleOf(i, c);
      expect(kohyaToModule(moduleToKohya('unet', module).slice('lora_unet_'.length))).toBe(module);
      const base: Host = c.dora ? rand(c.weight, 0.3) : { shape: c.weight, data: new Float32Array(size(c.weight)) };
      const model = fakeModel(new Map([[`${module}.weight`, base]]));
      const lora = readLoraFile(await writeKohya(path.join(tmp, `case-${i}.safetensors`), [{ module, parts: c.parts }]));
      try {
        for (const s of c.dora ? [1, 0.5] : [1, -0.75]) {
          const merged = applyLora(model, lora, s);
          const got = torchLayout(merged.model.unet.params.get(`${module}.weight`)!);
          merged.dispose();
          const delta = c.delta(c.parts);
          const want = c.dora ? dora(f64(base), delta, f64(c.parts.dora_scale!), c.dora, c.weight, s) : scaled(delta, s);
          const err = relError(got, want);
          measured[`${c.name} @ ${s}`] = err;
          expect(err, `${c.name} at scale ${s}`).toBeLessThan(1e-6);
        }
      } finally {
        disposeLora(lora);
        for (const t of model.unet.params.values()) t.dispose();
      }
    });
  });

  it('a file mixing LoRA, LoCon, LoHa, LoKr and DoRA modules loads and merges each as its own type', async () => {
    const modules = CASES.map((c, i) => ({ module: moduleOf(i, c), parts: c.parts }));
    const bases = new Map(CASES.map((c, i): [string, Host] => [`${moduleOf(i, c)}.weight`, rand(c.weight, 0.3)]));
    const model = fakeModel(bases);
    const file = await writeKohya(path.join(tmp, 'mixed.safetensors'), modules);
    const before = tf.memory().numTensors;
    const lora = readLoraFile(file);
    try {
      expect(lora.format).toBe('kohya');
      expect(lora.adapters.length + lora.lycoris!.length).toBe(CASES.length);
      expect(new Set(lora.lycoris!.map((a) => a.kind))).toEqual(new Set(['loha', 'lokr', 'locon-tucker']));
      const merged = applyLora(model, lora, 1);
      expect(merged.merged.unet).toBe(CASES.length);
      CASES.forEach((c, i) => {
        const key = `${moduleOf(i, c)}.weight`;
        const w = f64(bases.get(key)!);
        const delta = c.delta(c.parts);
        const want = c.dora ? dora(w, delta, f64(c.parts.dora_scale!), c.dora, c.weight, 1) : w.map((v, j) => v + delta[j]!);
        expect(relError(torchLayout(merged.model.unet.params.get(key)!), want), c.name).toBeLessThan(1e-6);
      });
      merged.dispose();
    } finally {
      disposeLora(lora);
    }
    expect(tf.memory().numTensors, 'read, merge, dispose leaves no tensor behind').toBe(before);
    for (const t of model.unet.params.values()) t.dispose();
  });
});

describe('files painter refuses, naming the key', () => {
  const refuse = async (name: string, parts: Record<string, Host>, ...want: (string | RegExp)[]) => {
    const file = path.join(tmp, name);
    await writeKohya(file, [{ module: 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q', parts }]);
    const model = fakeModel(new Map([['down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight', rand(LIN)]]));
    const before = tf.memory().numTensors;
    let error: unknown;
    try {
      const lora = readLoraFile(file);
      try {
        applyLora(model, lora, 1).dispose();
      } finally {
        disposeLora(lora);
      }
    } catch (e) {
      error = e;
    }
    expect(tf.memory().numTensors, `${name}: a refused file leaves no tensor behind`).toBe(before);
    for (const t of model.unet.params.values()) t.dispose();
    expect(error, name).toBeInstanceOf(PainterError);
    for (const w of [file, ...want]) expect((error as Error).message).toMatch(w);
    expect((error as Error).message).not.toContain('\n');
  };
  const key = (part: string) => `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.${part}`;

  it('unknown LyCORIS module types (OFT, BOFT, IA³, GLoRA, full diffs, norms)', async () => {
    for (const part of ['oft_blocks', 'oft_diag', 'on_input', 'diff', 'diff_b', 'w_norm', 'a1.weight', 'lokr_t1']) {
      await refuse(`unknown-${part}.safetensors`, { [part]: rand([2, 2]) }, key(part), /module type painter does not read/);
    }
    await refuse('typo.safetensors', { hada_w3_a: rand([2, 2]) }, key('hada_w3_a'), /unknown kohya-style LoRA key/);
  });

  it('incomplete or inconsistent modules', async () => {
    await refuse('half-loha.safetensors', { hada_w1_a: rand([6, 2]), hada_w1_b: rand([2, 8]) }, /LoHa module/, /hada_w2_a/);
    await refuse('mixed-algos.safetensors', { hada_w1_a: rand([6, 2]), lokr_w1: rand([2, 2]) }, /parts of LoHa and LoKr/);
    await refuse('lokr-both.safetensors', { lokr_w1: rand([2, 2]), lokr_w1_a: rand([2, 1]), lokr_w1_b: rand([1, 2]), lokr_w2: rand([3, 4]) }, key('lokr_w1'), /either lokr_w1 or lokr_w1_a/);
    await refuse('only-alpha.safetensors', { alpha: scalar(1), dora_scale: rand([6, 1]) }, /only alpha\/dora_scale/);
    await refuse('bad-dora.safetensors', { 'lora_down.weight': rand([2, 8]), 'lora_up.weight': rand([6, 2]), dora_scale: rand([6, 8]) }, key('dora_scale'), /no DoRA magnitude/);
  });

  it('modules that do not fit the model', async () => {
    await refuse('loha-wide.safetensors', { hada_w1_a: rand([6, 2]), hada_w1_b: rand([2, 9]), hada_w2_a: rand([6, 2]), hada_w2_b: rand([2, 9]) }, key('hada_w1_a'), /loha update is \[6, 9\]/);
    await refuse('lokr-tall.safetensors', { lokr_w1: rand([2, 2]), lokr_w2: rand([4, 4]) }, key('lokr_w1'), /lokr update is \[8, 8\]/);
    await refuse('dora-wrong.safetensors', { 'lora_down.weight': rand([2, 8]), 'lora_up.weight': rand([6, 2]), dora_scale: rand([7, 1]) }, key('lora_down.weight'), /DoRA magnitude has 7 values/);
  });
});

// --- on tiny-sd-a ----------------------------------------------------------------------------------

describe('generation with LyCORIS and DoRA files on tiny-sd-a', () => {
  let base: StableDiffusion;
  let reference: Map<string, tf.Tensor>;
  let plain: Generation;
  const PROMPT = 'a photo of a cat';
  const ATTN = 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v';
  const CONV = 'up_blocks.1.resnets.0.conv1';
  const TE = 'text_model.encoder.layers.0.self_attn.q_proj';

  beforeAll(() => {
    base = loadModel(TINY_SD_A);
    reference = loadInteropReference();
    plain = generate(base, PROMPT, reference);
  });
  afterAll(() => {
    disposeGeneration(plain);
    disposeModel(base);
    tf.dispose([...reference.values()]);
  });

  /** PyTorch-layout shape of a model weight. */
  const torchShape = (component: 'unet' | 'text_encoder', module: string) => {
    const w = (component === 'unet' ? base.unet : base.textEncoder).params.get(`${module}.weight`)!;
    return w.rank === 4 ? [w.shape[3]!, w.shape[2]!, w.shape[0]!, w.shape[1]!] : [w.shape[1]!, w.shape[0]!];
  };

  async function lycorisFile(name: string, kind: 'loha' | 'lokr' | 'dora'): Promise<string> {
    const out: Record<string, TensorToWrite> = {};
    const put = (component: 'unet' | 'text_encoder', module: string, parts: Record<string, Host>) => {
      for (const [p, t] of Object.entries(parts)) out[`${moduleToKohya(component, module)}.${p}`] = { shape: t.shape, data: t.data };
    };
    for (const [component, module] of [['unet', ATTN], ['unet', CONV], ['text_encoder', TE]] as const) {
      const [o, i, ...k] = torchShape(component, module);
      const flatIn = i! * size(k);
      if (kind === 'loha') put(component, module, { hada_w1_a: rand([o!, 2]), hada_w1_b: rand([2, flatIn]), hada_w2_a: rand([o!, 2]), hada_w2_b: rand([2, flatIn]), alpha: scalar(2) });
      else if (kind === 'lokr') put(component, module, { lokr_w1: rand([2, 2], 1), lokr_w2_a: rand([o! / 2, 2]), lokr_w2_b: rand([2, flatIn / 2]), alpha: scalar(2) });
      else {
        const m = tf.tidy(() => {
          const w = (component === 'unet' ? base.unet : base.textEncoder).params.get(`${module}.weight`)!;
          return tf.mul(tf.sqrt(tf.sum(tf.square(w), [...Array(w.rank - 1).keys()])), 1.5).dataSync() as Float32Array;
        });
        put(component, module, { 'lora_down.weight': rand([2, ...(k.length ? [i!, ...k] : [i!])]), 'lora_up.weight': rand(k.length ? [o!, 2, 1, 1] : [o!, 2]), alpha: scalar(2), dora_scale: { shape: [o!, ...k.map(() => 1), 1], data: Float32Array.from(m) } });
      }
    }
    const file = path.join(tmp, name);
    await writeSafetensors(file, out);
    return file;
  }

  it('generate --lora FILE:SCALE takes a LyCORIS file on the command line; an unknown module type is one line', async () => {
    const file = await lycorisFile('cli-loha.safetensors', 'loha');
    const ok = await runCli(['generate', 'a cat', '--model', TINY_SD_A, '--steps', '1', '--lora', `${file}:0.5`, '--out', path.join(tmp, 'cli'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const bad = path.join(tmp, 'oft.safetensors');
    await writeSafetensors(bad, { [`${moduleToKohya('unet', ATTN)}.oft_blocks`]: { shape: [2, 2, 2], data: new Float32Array(8) } });
    const r = await runCli(['generate', 'a cat', '--model', TINY_SD_A, '--steps', '1', '--lora', bad, '--out', path.join(tmp, 'cli-bad')]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`${moduleToKohya('unet', ATTN)}.oft_blocks`);
  });

  const pixels = (a: Generation, b: Generation) => tf.tidy(() => tf.max(tf.abs(tf.sub(a.image!, b.image!))).dataSync()[0]! * 255);

  for (const kind of ['loha', 'lokr', 'dora'] as const) {
    it(`a ${kind === 'dora' ? 'DoRA' : kind === 'loha' ? 'LoHa' : 'LoKr'} file changes the image and only its weights; scale 0 leaves it identical`, async () => {
      const lora: LoraWeights = readLoraFile(await lycorisFile(`${kind}.safetensors`, kind));
      try {
        const on = applyLora(base, lora, 1);
        const off = applyLora(base, lora, 0);
        try {
          expect(on.merged).toEqual({ unet: 2, text_encoder: 1 });
          for (const [part, before, after] of [['unet', base.unet.params, on.model.unet.params], ['text_encoder', base.textEncoder.params, on.model.textEncoder.params]] as const) {
            for (const [k, t] of before) {
              const targeted = [ATTN, CONV, TE].some((m) => k === `${m}.weight`);
              if (!targeted) expect(after.get(k), `${part} ${k}`).toBe(t);
              else expect(tf.tidy(() => tf.max(tf.abs(tf.sub(after.get(k)!, t))).dataSync()[0]!), `${part} ${k}`).toBeGreaterThan(1e-3);
            }
          }
          const changed = generate(on.model, PROMPT, reference);
          const same = generate(off.model, PROMPT, reference);
          const moved = pixels(changed, plain);
          measured[`${kind} image change (1/255)`] = moved;
          expect(moved).toBeGreaterThan(1);
          expect(pixels(same, plain)).toBe(0);
          disposeGeneration(changed);
          disposeGeneration(same);
        } finally {
          on.dispose();
          off.dispose();
        }
      } finally {
        disposeLora(lora);
      }
    });
  }
});

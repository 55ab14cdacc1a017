/**
 * Training must work on every backend: the gradients of a small SD-style network (conv,
 * GroupNorm, attention, stride-2 conv, nearest upsample, embedding lookup), batch 2, agree
 * between wasm and cpu and with central finite differences.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/backend/select.js';
import { attention, conv2d, embeddingLookup, groupNorm, linear, silu, upsampleNearest2x } from '../src/core/ops.js';

type Arrays = Record<string, { shape: number[]; data: Float32Array }>;

function seededArrays(): Arrays {
  let s = 12345;
  const rnd = () => {
    // xorshift → roughly N(0,1) by summing uniforms; deterministic and backend-free
    let acc = 0;
    for (let k = 0; k < 4; k++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      acc += (s >>> 0) / 0xffffffff;
    }
    return (acc - 2) * Math.sqrt(3);
  };
  const make = (shape: number[], scale: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { shape, data: Float32Array.from({ length: n }, () => rnd() * scale) };
  };
  return {
    x: make([2, 8, 8, 4], 1),
    conv_in: make([3, 3, 4, 8], 1 / Math.sqrt(36)),
    gn_gamma: make([8], 0.1),
    gn_beta: make([8], 0.05),
    to_q: make([8, 8], 1 / Math.sqrt(8)),
    to_k: make([6, 8], 1 / Math.sqrt(6)),
    to_v: make([6, 8], 1 / Math.sqrt(6)),
    down: make([3, 3, 8, 8], 1 / Math.sqrt(72)),
    conv_out: make([3, 3, 8, 4], 1 / Math.sqrt(72)),
    table: make([10, 6], 1),
    probe: make([2, 8, 8, 4], 1),
  };
}

const IDS = [
  [1, 3, 3, 7],
  [0, 9, 2, 3],
];

/** Scalar loss of the test network; every weight is used. */
function loss(p: Record<string, tf.Tensor>): tf.Scalar {
  const x = p['x'] as tf.Tensor4D;
  let h = conv2d(x, p['conv_in']!, undefined, 1, 1);
  h = groupNorm(h, 4, tf.add(1, p['gn_gamma']!), p['gn_beta']!, 1e-5);
  h = silu(h) as tf.Tensor4D;
  const [b, hh, ww, c] = h.shape;
  const ctx = embeddingLookup(p['table']!, tf.tensor2d(IDS, [2, 4], 'int32'));
  const seq = h.reshape([b, hh * ww, c]);
  const att = attention(linear(seq, p['to_q']!), linear(ctx, p['to_k']!), linear(ctx, p['to_v']!), 2);
  h = tf.add(h, att.reshape([b, hh, ww, c]));
  h = conv2d(h, p['down']!, undefined, 2, 1); // stride-2, PyTorch padding
  h = upsampleNearest2x(h);
  const y = conv2d(h, p['conv_out']!, undefined, 1, 1);
  return tf.sum(tf.mul(y, p['probe']!));
}

function gradsOn(arrays: Arrays): { value: number; grads: Record<string, Float32Array> } {
  return tf.tidy(() => {
    const vars: Record<string, tf.Variable> = {};
    for (const [k, a] of Object.entries(arrays)) {
      if (k !== 'probe') vars[k] = tf.variable(tf.tensor(a.data, a.shape), true, `${k}_${tf.getBackend()}_${Math.random()}`);
    }
    const probe = tf.tensor(arrays['probe']!.data, arrays['probe']!.shape);
    const { value, grads } = tf.variableGrads(() => loss({ ...vars, probe }), Object.values(vars));
    const out: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(vars)) out[k] = grads[v.name]!.dataSync() as Float32Array;
    const val = value.dataSync()[0]!;
    for (const v of Object.values(vars)) v.dispose();
    return { value: val, grads: out };
  });
}

function lossAt(arrays: Arrays): number {
  return tf.tidy(() => {
    const p: Record<string, tf.Tensor> = {};
    for (const [k, a] of Object.entries(arrays)) p[k] = tf.tensor(a.data, a.shape);
    return loss(p).dataSync()[0]!;
  });
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

describe('gradients on wasm and cpu', () => {
  const arrays = seededArrays();
  let wasm: ReturnType<typeof gradsOn>;
  let cpu: ReturnType<typeof gradsOn>;

  beforeAll(async () => {
    await selectBackend('cpu');
    cpu = gradsOn(arrays);
    await selectBackend('wasm');
    wasm = gradsOn(arrays);
  });

  it('wasm trains the network at all (Conv2DBackpropFilter, UnsortedSegmentSum)', () => {
    for (const k of Object.keys(wasm.grads)) {
      const g = wasm.grads[k]!;
      expect(g.every(Number.isFinite), k).toBe(true);
      expect(g.some((v) => v !== 0), k).toBe(true);
    }
  });

  it('wasm and cpu agree within 1e-4', () => {
    expect(Math.abs(wasm.value - cpu.value) / Math.abs(cpu.value)).toBeLessThan(1e-5);
    for (const k of Object.keys(wasm.grads)) expect(maxRel(wasm.grads[k]!, cpu.grads[k]!), k).toBeLessThan(1e-4);
  });

  it('embedding gradient touches exactly the looked-up rows, summed over repeats', () => {
    const g = wasm.grads['table']!;
    const used = new Set(IDS.flat());
    for (let row = 0; row < 10; row++) {
      const nonzero = Array.from(g.subarray(row * 6, row * 6 + 6)).some((v) => v !== 0);
      expect(nonzero, `row ${row}`).toBe(used.has(row));
    }
  });

  it('matches central finite differences along random directions (1e-3 relative)', async () => {
    await selectBackend('wasm');
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    for (const k of Object.keys(wasm.grads)) {
      const a = arrays[k]!;
      const dir = Float32Array.from({ length: a.data.length }, rand);
      const eps = 1e-2;
      const plus: Arrays = { ...arrays, [k]: { shape: a.shape, data: a.data.map((v, i) => v + eps * dir[i]!) } };
      const minus: Arrays = { ...arrays, [k]: { shape: a.shape, data: a.data.map((v, i) => v - eps * dir[i]!) } };
      const fd = (lossAt(plus) - lossAt(minus)) / (2 * eps);
      const analytic = wasm.grads[k]!.reduce((s, g, i) => s + g * dir[i]!, 0);
      expect(Math.abs(fd - analytic) / Math.max(Math.abs(analytic), 1e-3), `${k}: fd ${fd} vs ${analytic}`).toBeLessThan(1e-3);
    }
  });

  it('stride-2 convolution pads like PyTorch (1 on both sides), not like tfjs "same"', async () => {
    await selectBackend('wasm');
    // A 4×4 ramp, 3×3 all-ones kernel, stride 2, padding 1: PyTorch gives windows centred on 0 and 2.
    const x = tf.tensor4d(Array.from({ length: 16 }, (_, i) => i), [1, 4, 4, 1]);
    const w = tf.ones([3, 3, 1, 1]);
    const y = conv2d(x, w, undefined, 2, 1);
    expect(Array.from(y.dataSync())).toEqual([0 + 1 + 4 + 5, 1 + 2 + 3 + 5 + 6 + 7, 4 + 5 + 8 + 9 + 12 + 13, 5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15]);
    tf.dispose([x, w, y]);
  });
});

describe('conv2d gradients built from forward convolutions', () => {
  it('equal the cpu backend\'s native Conv2DBackpropFilter / Conv2DBackpropInput', async () => {
    await selectBackend('cpu');
    const { conv2dFilterGrad, conv2dInputGrad } = await import('../src/backend/kernels.js');
    const cases = [
      { x: [2, 8, 8, 3], k: 3, s: 1, p: 1 },
      { x: [2, 8, 8, 3], k: 3, s: 2, p: 1 },
      { x: [1, 7, 9, 2], k: 3, s: 2, p: 1 },
      { x: [2, 5, 5, 4], k: 1, s: 1, p: 0 },
      { x: [1, 9, 6, 2], k: 3, s: 2, p: 0 },
    ];
    for (const c of cases) {
      tf.tidy(() => {
        const x = tf.randomNormal(c.x, 0, 1, 'float32', 1) as tf.Tensor4D;
        const w = tf.randomNormal([c.k, c.k, c.x[3]!, 5], 0, 1, 'float32', 2) as tf.Tensor4D;
        const pad: tf.backend_util.ExplicitPadding = [[0, 0], [c.p, c.p], [c.p, c.p], [0, 0]];
        const y = tf.conv2d(x, w, c.s, pad);
        const dy = tf.randomNormal(y.shape, 0, 1, 'float32', 3) as tf.Tensor4D;
        const info = tf.backend_util.computeConv2DInfo(x.shape, w.shape, c.s, 1, pad as unknown as 'valid');
        const attrs = { strides: c.s, pad, dataFormat: 'NHWC', dimRoundingMode: undefined };
        const nativeF = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const nativeX = tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const ours = conv2dFilterGrad(x, dy, w.shape, info);
        const oursX = conv2dInputGrad(x.shape, dy, w, info);
        expect(ours.shape).toEqual(nativeF.shape);
        expect(oursX.shape).toEqual(nativeX.shape);
        expect(tf.max(tf.abs(tf.sub(ours, nativeF))).dataSync()[0], JSON.stringify(c)).toBeLessThan(1e-4);
        expect(tf.max(tf.abs(tf.sub(oursX, nativeX))).dataSync()[0], JSON.stringify(c)).toBeLessThan(1e-4);
      });
    }
  });
});

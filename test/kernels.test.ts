/**
 * Training must work on every backend: the gradients of a small SD-style network (conv,
 * GroupNorm, attention, stride-2 conv, nearest upsample, embedding lookup), batch 2, agree
 * between wasm and cpu and with central finite differences.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/backend/select.js';
import { ADAMW, AdamW } from '../src/backend/fused-adamw.js';
import { FLIP_FILTER } from '../src/backend/conv-kernels.js';
import { hasKernel, runKernel } from '../src/backend/js-kernel.js';
import { attention, conv2d, embeddingLookup, groupNorm, groupNormSilu, layerNorm, linear, silu, upsampleNearest2x } from '../src/core/ops.js';

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

// ---------------------------------------------------------------------------------------------
// painter's fast kernels (backend/*.ts): each against a plain reference, on wasm and cpu, batch 2
// ---------------------------------------------------------------------------------------------

type Backend = 'wasm' | 'cpu';
const BACKENDS: Backend[] = ['wasm', 'cpu'];

/** Runs `fn` on `backend` and copies its outputs to the host. */
async function hostRun(backend: Backend, fn: () => tf.Tensor[]): Promise<Float32Array[]> {
  await selectBackend(backend);
  return tf.tidy(() => fn().map((t) => t.dataSync() as Float32Array).map((a) => a.slice()));
}

/** Value and gradients (w.r.t. every input) of sum(f(inputs)·probe). */
function valueAndGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], probe: tf.Tensor): tf.Tensor[] {
  const y = f(...inputs);
  const grads = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), probe)))(inputs);
  return [y, ...grads];
}

const rnd = (shape: number[], seed: number, mean = 0, std = 1): tf.Tensor => tf.randomNormal(shape, mean, std, 'float32', seed);

function refGroupNorm(x: tf.Tensor, groups: number, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const g = x.reshape([n, h * w, groups, c / groups]);
  const { mean, variance } = tf.moments(g, [1, 3], true);
  return tf.add(tf.mul(tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, eps))).reshape([n, h, w, c]), gamma), beta);
}

function refLayerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), gamma), beta);
}

describe('fused kernels match plain tf references (values and gradients)', () => {
  const cases: { name: string; kernel: string; inputs: () => tf.Tensor[]; fused: (...xs: tf.Tensor[]) => tf.Tensor; ref: (...xs: tf.Tensor[]) => tf.Tensor }[] = [
    {
      name: 'groupNorm',
      kernel: 'PainterGroupNorm',
      // Offset mean: the variance must survive cancellation.
      inputs: () => [rnd([2, 5, 6, 12], 1, 3, 2), rnd([12], 2, 1, 0.3), rnd([12], 3, 0, 0.3)],
      fused: (x, g, b) => groupNorm(x as tf.Tensor4D, 3, g!, b!, 1e-5),
      ref: (x, g, b) => refGroupNorm(x!, 3, g!, b!, 1e-5),
    },
    {
      // Channels not a multiple of 4: the column sums' remainder path.
      name: 'groupNorm, 6 channels',
      kernel: 'PainterGroupNorm',
      inputs: () => [rnd([2, 3, 5, 6], 11, -0.5, 2), rnd([6], 12, 1, 0.3), rnd([6], 13, 0, 0.3)],
      fused: (x, g, b) => groupNormSilu(x as tf.Tensor4D, 2, g!, b!, 1e-5),
      ref: (x, g, b) => silu(refGroupNorm(x!, 2, g!, b!, 1e-5)),
    },
    {
      name: 'groupNormSilu',
      kernel: 'PainterGroupNorm',
      inputs: () => [rnd([2, 4, 3, 8], 4, -1, 1.5), rnd([8], 5, 1, 0.3), rnd([8], 6, 0, 0.3)],
      fused: (x, g, b) => groupNormSilu(x as tf.Tensor4D, 4, g!, b!, 1e-6),
      ref: (x, g, b) => silu(refGroupNorm(x!, 4, g!, b!, 1e-6)),
    },
    {
      name: 'layerNorm',
      kernel: 'PainterLayerNorm',
      inputs: () => [rnd([2, 7, 12], 7, 2, 1), rnd([12], 8, 1, 0.3), rnd([12], 9, 0, 0.3)],
      fused: (x, g, b) => layerNorm(x!, g!, b!, 1e-5),
      ref: (x, g, b) => refLayerNorm(x!, g!, b!, 1e-5),
    },
  ];
  for (const c of cases) {
    for (const backend of BACKENDS) {
      it(`${c.name} on ${backend}`, async () => {
        const out = await hostRun(backend, () => {
          expect(hasKernel(c.kernel), `${c.kernel} registered on ${backend}`).toBe(true);
          const xs = c.inputs();
          const probe = rnd(c.fused(...xs).shape, 99);
          return [...valueAndGrads(c.fused, xs, probe), ...valueAndGrads(c.ref, xs, probe)];
        });
        const half = out.length / 2;
        for (let i = 0; i < half; i++) expect(maxRel(out[i]!, out[half + i]!), `${c.name} output ${i}`).toBeLessThan(i === 0 ? 1e-5 : 1e-4);
      });
    }
  }

  it('leave no tensors behind (forward and backward)', async () => {
    await selectBackend('wasm');
    const run = () =>
      tf.tidy(() => {
        const x = rnd([2, 4, 4, 8], 1);
        const g = rnd([8], 2);
        const b = rnd([8], 3);
        tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(groupNormSilu(a as tf.Tensor4D, 2, gg, bb, 1e-5)))([x, g, b]);
        groupNorm(x as tf.Tensor4D, 2, g, b, 1e-5);
      });
    run();
    const before = tf.memory().numTensors;
    run();
    const y = groupNorm(rnd([2, 2, 2, 4], 4) as tf.Tensor4D, 2, tf.ones([4]), tf.zeros([4]), 1e-5);
    expect(tf.memory().numTensors).toBe(before + 4); // the input, gamma, beta and the output: no statistics tensor
    tf.dispose(y);
  });
});

describe('wasm BatchMatMul fast paths equal the cpu backend', () => {
  // [a shape, b shape, transposeA, transposeB]: plain, transposed, batched, broadcast, and shapes
  // whose cheapest route is through Cᵀ.
  const cases: [number[], number[], boolean, boolean][] = [
    [[5, 7], [7, 3], false, false],
    [[7, 5], [7, 3], true, false],
    [[5, 7], [3, 7], false, true],
    [[7, 5], [3, 7], true, true],
    [[2, 4, 5, 7], [2, 4, 7, 3], false, false],
    [[2, 4, 7, 5], [2, 4, 3, 7], true, true],
    [[2, 4, 9, 9], [2, 4, 9, 3], true, false],
    [[6, 5, 7], [7, 3], false, false],
    [[1, 5, 7], [6, 7, 3], false, false],
    [[40, 30], [40, 6], true, false],
    [[3, 40, 30], [40, 6], true, false],
    [[30, 40], [6, 40], false, true],
  ];
  // tfjs's own BatchMatMul gradient does not reduce broadcast batch dimensions, so broadcast
  // cases check values only (painter's ops reshape to 2-D or equal batches).
  const broadcast = (sa: number[], sb: number[]) => sa.length !== sb.length || sa.slice(0, -2).some((d, i) => d !== sb[i]);
  const run = (backend: Backend) =>
    hostRun(backend, () =>
      cases.flatMap(([sa, sb, ta, tb], i) => {
        const a = rnd(sa, 20 + i);
        const b = rnd(sb, 40 + i);
        const f = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, ta, tb);
        const y = f(a, b);
        return broadcast(sa, sb) ? [y, y, y] : valueAndGrads(f, [a, b], rnd(y.shape, 60 + i));
      }),
    );

  it('values and gradients, every case', async () => {
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    cpu.forEach((ref, i) => {
      const c = cases[Math.floor(i / 3)]!;
      expect(wasm[i]!.length, JSON.stringify(c)).toBe(ref.length);
      expect(maxRel(wasm[i]!, ref), `${JSON.stringify(c)} output ${i % 3}`).toBeLessThan(1e-5);
    });
  });
});

describe('other wasm/cpu kernels', () => {
  it('Sum over leading axes (the column-sum path) and other axes equals cpu', async () => {
    const reductions: [number[], boolean][] = [
      [[0], false],
      [[0, 1], true],
      [[0, 1, 2], false],
      [[1], false],
      [[-1], true],
      [[0, 1, 2, 3], false],
    ];
    const go = (backend: Backend) =>
      hostRun(backend, () => {
        const x = rnd([2, 3, 4, 5], 7);
        return reductions.map(([axes, keep]) => tf.sum(x, axes, keep));
      });
    const cpu = await go('cpu');
    const wasm = await go('wasm');
    cpu.forEach((ref, i) => expect(maxRel(wasm[i]!, ref), JSON.stringify(reductions[i])).toBeLessThan(1e-6));
  });

  it('the conv filter flip equals reverse + transpose, and is its own gradient', async () => {
    for (const backend of BACKENDS) {
      const [flip, ref, grad, refGrad] = await hostRun(backend, () => {
        const w = rnd([3, 3, 4, 5], 8);
        const probe = rnd([3, 3, 5, 4], 9);
        const ours = (t: tf.Tensor) => runKernel(FLIP_FILTER, { filter: t })[0]!;
        const plain = (t: tf.Tensor) => tf.reverse(t, [0, 1]).transpose([0, 1, 3, 2]);
        return [ours(w), plain(w), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(ours(t), probe)))(w), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(plain(t), probe)))(w)];
      });
      expect(Array.from(flip!), backend).toEqual(Array.from(ref!));
      expect(Array.from(grad!), backend).toEqual(Array.from(refGrad!));
    }
  });

  it('wasm Identity shares memory safely: a clone outlives its source', async () => {
    await selectBackend('wasm');
    const x = tf.tensor1d([1, 2, 3]);
    const y = tf.clone(x);
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual([1, 2, 3]);
    y.dispose();
  });

  it('conv2d gradients on wasm equal the cpu backend\'s native kernels', async () => {
    const convCases = [
      { x: [2, 8, 8, 3], k: 3, s: 1, p: 1 },
      { x: [2, 8, 8, 3], k: 3, s: 2, p: 1 },
      { x: [2, 6, 5, 4], k: 3, s: 1, p: 2 },
      { x: [2, 5, 5, 4], k: 1, s: 1, p: 0 },
      // Stride 1 runs the GEMM filter gradient (wasm-conv-filter-grad.ts): its im2col route on a
      // non-square 'valid' conv, and its per-tap route from 64×64 up.
      { x: [2, 7, 9, 3], k: 3, s: 1, p: 0 },
      { x: [1, 64, 64, 2], k: 3, s: 1, p: 1 },
    ];
    const native: Float32Array[] = [];
    await selectBackend('cpu');
    for (const [i, c] of convCases.entries()) {
      tf.tidy(() => {
        const x = rnd(c.x, 30 + i) as tf.Tensor4D;
        const w = rnd([c.k, c.k, c.x[3]!, 5], 50 + i) as tf.Tensor4D;
        const pad: tf.backend_util.ExplicitPadding = [[0, 0], [c.p, c.p], [c.p, c.p], [0, 0]];
        const dy = rnd(tf.conv2d(x, w, c.s, pad).shape, 70 + i);
        const attrs = { strides: c.s, pad, dataFormat: 'NHWC', dimRoundingMode: undefined };
        native.push((tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: x.shape } as unknown as tf.NamedAttrMap) as tf.Tensor).dataSync() as Float32Array);
        native.push((tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: w.shape } as unknown as tf.NamedAttrMap) as tf.Tensor).dataSync() as Float32Array);
      });
    }
    const ours = await hostRun('wasm', () =>
      convCases.flatMap((c, i) => {
        const x = rnd(c.x, 30 + i);
        const w = rnd([c.k, c.k, c.x[3]!, 5], 50 + i);
        const pad: tf.backend_util.ExplicitPadding = [[0, 0], [c.p, c.p], [c.p, c.p], [0, 0]];
        const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, pad);
        const dy = rnd(f(x, w).shape, 70 + i);
        return tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a, b), dy)))([x, w]);
      }),
    );
    native.forEach((ref, i) => expect(maxRel(ours[i]!, ref), `${JSON.stringify(convCases[i >> 1])} ${i % 2 ? 'filter' : 'input'}`).toBeLessThan(1e-5));
  });
});

describe('fused AdamW', () => {
  /** torch.optim.AdamW, written out in float64. */
  function reference(p0: Float32Array, grads: Float32Array[], lr: number, wd: number): Float64Array {
    const [b1, b2, eps] = [0.9, 0.999, 1e-8];
    const p = Float64Array.from(p0);
    const m = new Float64Array(p.length);
    const v = new Float64Array(p.length);
    grads.forEach((g, s) => {
      const t = s + 1;
      for (let i = 0; i < p.length; i++) {
        p[i]! *= 1 - lr * wd;
        m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
        v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
        p[i]! -= ((lr / (1 - b1 ** t)) * m[i]!) / (Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** t) + eps);
      }
    });
    return p;
  }

  const runSteps = async (backend: Backend, useKernel: boolean): Promise<{ p0: Float32Array; grads: Float32Array[]; p: Float32Array }> => {
    await selectBackend(backend);
    const saved = tf.getKernel(ADAMW, backend)!;
    if (!useKernel) tf.unregisterKernel(ADAMW, backend);
    try {
      const init = rnd([4, 6], 11);
      const v = tf.variable(init, true, `adamw_probe_${backend}_${useKernel}`);
      const p0 = init.dataSync().slice() as Float32Array;
      init.dispose();
      const opt = new AdamW({ lr: 0.05, weightDecay: 0.1 });
      const grads: Float32Array[] = [];
      for (let s = 0; s < 3; s++) {
        const g = rnd([4, 6], 12 + s);
        grads.push(g.dataSync().slice() as Float32Array);
        opt.applyGradients([v], { [v.name]: g });
        g.dispose();
      }
      const p = v.dataSync().slice() as Float32Array;
      opt.dispose();
      v.dispose();
      return { p0, grads, p };
    } finally {
      if (!useKernel) tf.registerKernel(saved);
    }
  };

  for (const backend of BACKENDS) {
    for (const useKernel of [true, false]) {
      it(`matches torch's AdamW over 3 steps on ${backend} (${useKernel ? 'fused kernel' : 'tf ops'})`, async () => {
        const before = tf.memory().numTensors;
        const { p0, grads, p } = await runSteps(backend, useKernel);
        const ref = reference(p0, grads, 0.05, 0.1);
        expect(maxRel(p, Float32Array.from(ref))).toBeLessThan(1e-6);
        expect(tf.memory().numTensors).toBe(before);
      });
    }
  }
});

describe('switching the fast kernels off and on', () => {
  it('restores tfjs kernels and plain ops, then painter\'s again, with equal results', async () => {
    const { setFastKernels } = await import('../src/backend/kernels.js');
    await selectBackend('wasm');
    const fastMatMul = tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc;
    const compute = () =>
      tf.tidy(() => {
        const x = rnd([2, 4, 4, 8], 1) as tf.Tensor4D;
        const y = groupNormSilu(x, 2, tf.ones([8]), tf.zeros([8]), 1e-5);
        return tf.matMul(y.reshape([32, 8]), rnd([32, 8], 2), true, false).dataSync().slice() as Float32Array;
      });
    const on = compute();
    setFastKernels(false);
    try {
      expect(hasKernel('PainterGroupNorm')).toBe(false);
      expect(tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc).not.toBe(fastMatMul);
      expect(maxRel(compute(), on)).toBeLessThan(1e-5);
    } finally {
      setFastKernels(true);
    }
    expect(hasKernel('PainterGroupNorm')).toBe(true);
    expect(tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc).toBe(fastMatMul);
  });
});

/**
 * Fused GroupNorm (optionally followed by SiLU) and LayerNorm for the wasm and cpu backends,
 * with their gradients. As composites these are ~10 kernels forward and ~25 backward, many of
 * them broadcasting ops that wasm runs slowly; fused, each direction is 2–3 passes over memory.
 * Statistics accumulate in float64.
 *
 *   x̂ = (x − μ)·r,  r = 1/√(σ² + ε),  y = γ·x̂ + β  (then SiLU: y·σ(y))
 *   ∂L/∂β = Σ g,  ∂L/∂γ = Σ g·x̂,  ∂L/∂x = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)),  ĝ = γ·g
 * where g is ∂L/∂y (through SiLU: g = ∂L/∂out·s·(1 + y·(1 − s)), s = σ(y)) and the means run over
 * the normalised group (GroupNorm: H·W·C/G values per sample and group; LayerNorm: the row).
 */
import * as tf from '@tensorflow/tfjs';
import { columnMoments } from './column-sums.js';
import { registerJsKernel, runKernel, type Attrs, type JsKernel } from './js-kernel.js';

export const GROUP_NORM = 'PainterGroupNorm';
const GROUP_NORM_GRAD = 'PainterGroupNormGrad';
export const LAYER_NORM = 'PainterLayerNorm';
const LAYER_NORM_GRAD = 'PainterLayerNormGrad';

interface GroupNormAttrs {
  groups: number;
  eps: number;
  silu: boolean;
}

function gnAttrs(a: Attrs): GroupNormAttrs {
  return { groups: a['groups'] as number, eps: a['eps'] as number, silu: Boolean(a['silu']) };
}

/**
 * Per-channel constants of one sample from its group statistics: x̂ = x·a + b with a = r,
 * b = −μ·r of the channel's group.
 */
function channelAffine(stats: Float32Array, sample: number, groups: number, c: number, a: Float64Array, b: Float64Array): void {
  const cg = c / groups;
  for (let ch = 0; ch < c; ch++) {
    const g = (ch / cg) | 0;
    const m = stats[(sample * groups + g) * 2]!;
    const r = stats[(sample * groups + g) * 2 + 1]!;
    a[ch] = r;
    b[ch] = -m * r;
  }
}

/** Forward: [y, stats] with stats [N, G, 2] = (μ, r) per sample and group. */
const groupNormKernel: JsKernel = {
  name: GROUP_NORM,
  inputs: ['x', 'gamma', 'beta'],
  outputShapes: ([xs], a) => [xs!, [xs![0]!, gnAttrs(a).groups, 2]],
  compute([x, gamma, beta], [y, stats], [xs], attrs, helpers) {
    const { groups, eps, silu } = gnAttrs(attrs);
    const [n, h, w, c] = xs as [number, number, number, number];
    const hw = h * w;
    const cg = c / groups;
    const count = hw * cg;
    const sum = new Float64Array(c);
    const sumSq = new Float64Array(c);
    const scale = new Float64Array(c);
    const shift = new Float64Array(c);
    for (let b = 0; b < n; b++) {
      const start = b * hw * c;
      const end = start + hw * c;
      // One pass: Σx and Σx² per channel in float64 (σ² = E[x²] − μ² loses nothing at float32 inputs).
      columnMoments(x!, x!, start, end, c, sum, sumSq);
      for (let g = 0; g < groups; g++) {
        let s = 0;
        let sq = 0;
        for (let ch = g * cg; ch < (g + 1) * cg; ch++) {
          s += sum[ch]!;
          sq += sumSq[ch]!;
        }
        const m = s / count;
        const r = 1 / Math.sqrt(Math.max(sq / count - m * m, 0) + eps);
        stats![(b * groups + g) * 2] = m;
        stats![(b * groups + g) * 2 + 1] = r;
      }
      // y = γ·(x − μ)·r + β = x·(γr) + (β − μγr), with the float32-rounded statistics the
      // backward pass will read.
      channelAffine(stats!, b, groups, c, scale, shift);
      for (let ch = 0; ch < c; ch++) {
        scale[ch] = scale[ch]! * gamma![ch]!;
        shift[ch] = shift[ch]! * gamma![ch]! + beta![ch]!;
      }
      for (let off = start; off < end; off += c) {
        for (let ch = 0; ch < c; ch++) y![off + ch] = x![off + ch]! * scale[ch]! + shift[ch]!;
      }
      if (silu) {
        // σ(y) in place (the backend's Sigmoid, vectorised on wasm), then y·σ(y) with y recomputed.
        const ys = y!.subarray(start, end);
        helpers.sigmoid(ys, ys);
        for (let off = start; off < end; off += c) {
          for (let ch = 0; ch < c; ch++) y![off + ch] = (x![off + ch]! * scale[ch]! + shift[ch]!) * y![off + ch]!;
        }
      }
    }
  },
};

/** Backward: [dx, dγ, dβ] from dy, x, γ, β and the forward's stats. */
const groupNormGradKernel: JsKernel = {
  name: GROUP_NORM_GRAD,
  inputs: ['dy', 'x', 'gamma', 'beta', 'stats'],
  outputShapes: ([, xs, gs, bs]) => [xs!, gs!, bs!],
  compute([dy, x, gamma, beta, stats], [dx, dgamma, dbeta], [, xs], attrs, helpers) {
    const { groups, silu } = gnAttrs(attrs);
    const [n, h, w, c] = xs as [number, number, number, number];
    const hw = h * w;
    const cg = c / groups;
    const count = hw * cg;
    const dg = new Float64Array(c);
    const db = new Float64Array(c);
    const sumG = new Float64Array(c);
    const sumGX = new Float64Array(c);
    const a = new Float64Array(c);
    const b0 = new Float64Array(c);
    const ys = new Float64Array(c);
    const yt = new Float64Array(c);
    const ca = new Float64Array(c);
    const cb = new Float64Array(c);
    for (let b = 0; b < n; b++) {
      const start = b * hw * c;
      const end = start + hw * c;
      channelAffine(stats!, b, groups, c, a, b0);
      for (let ch = 0; ch < c; ch++) {
        ys[ch] = a[ch]! * gamma![ch]!;
        yt[ch] = b0[ch]! * gamma![ch]! + beta![ch]!;
      }
      // Pass 1: g = ∂L/∂y, kept in dx (through SiLU: σ of the pre-activation y first, in dx).
      if (silu) {
        for (let off = start; off < end; off += c) {
          for (let ch = 0; ch < c; ch++) dx![off + ch] = x![off + ch]! * ys[ch]! + yt[ch]!;
        }
        const d = dx!.subarray(start, end);
        helpers.sigmoid(d, d);
        for (let off = start; off < end; off += c) {
          for (let ch = 0; ch < c; ch++) {
            const yv = x![off + ch]! * ys[ch]! + yt[ch]!;
            const sv = dx![off + ch]!;
            dx![off + ch] = dy![off + ch]! * sv * (1 + yv * (1 - sv));
          }
        }
      } else dx!.set(dy!.subarray(start, end), start);
      // Per channel Σg and Σg·x, hence Σg·x̂ = a·Σg·x + b·Σg.
      columnMoments(dx!, x!, start, end, c, sumG, sumGX);
      for (let ch = 0; ch < c; ch++) sumGX[ch] = a[ch]! * sumGX[ch]! + b0[ch]! * sumG[ch]!;
      // Group means of ĝ = γ·g and ĝ·x̂, then ∂L/∂x = r·(ĝ − mean ĝ − x̂·mean(ĝ·x̂)) as
      // dx = g·(rγ) + x·(a·C) + (B + b·C) with B = −r·mean ĝ, C = −r·mean(ĝ·x̂).
      for (let grp = 0; grp < groups; grp++) {
        let mg = 0;
        let mgx = 0;
        for (let ch = grp * cg; ch < (grp + 1) * cg; ch++) {
          mg += gamma![ch]! * sumG[ch]!;
          mgx += gamma![ch]! * sumGX[ch]!;
        }
        mg /= count;
        mgx /= count;
        for (let ch = grp * cg; ch < (grp + 1) * cg; ch++) {
          const r = a[ch]!;
          const cc = -r * mgx;
          ys[ch] = r * gamma![ch]!;
          ca[ch] = a[ch]! * cc;
          cb[ch] = -r * mg + b0[ch]! * cc;
        }
      }
      for (let off = start; off < end; off += c) {
        for (let ch = 0; ch < c; ch++) dx![off + ch] = dx![off + ch]! * ys[ch]! + x![off + ch]! * ca[ch]! + cb[ch]!;
      }
      for (let ch = 0; ch < c; ch++) {
        db[ch]! += sumG[ch]!;
        dg[ch]! += sumGX[ch]!;
      }
    }
    dgamma!.set(dg);
    dbeta!.set(db);
  },
};

/** Forward over the last axis: [y, stats] with stats [rows, 2] = (μ, r). */
const layerNormKernel: JsKernel = {
  name: LAYER_NORM,
  inputs: ['x', 'gamma', 'beta'],
  outputShapes: ([xs]) => [xs!, [xs!.slice(0, -1).reduce((a, b) => a * b, 1), 2]],
  compute([x, gamma, beta], [y, stats], [xs], attrs) {
    const eps = attrs['eps'] as number;
    const d = xs![xs!.length - 1]!;
    const rows = x!.length / d;
    for (let row = 0; row < rows; row++) {
      const off = row * d;
      let s = 0;
      for (let j = 0; j < d; j++) s += x![off + j]!;
      const m = s / d;
      let sq = 0;
      for (let j = 0; j < d; j++) {
        const v = x![off + j]! - m;
        sq += v * v;
      }
      const r = 1 / Math.sqrt(sq / d + eps);
      stats![row * 2] = m;
      stats![row * 2 + 1] = r;
      for (let j = 0; j < d; j++) y![off + j] = (x![off + j]! - m) * r * gamma![j]! + beta![j]!;
    }
  },
};

const layerNormGradKernel: JsKernel = {
  name: LAYER_NORM_GRAD,
  inputs: ['dy', 'x', 'gamma', 'stats'],
  outputShapes: ([, xs, gs]) => [xs!, gs!, gs!],
  compute([dy, x, gamma, stats], [dx, dgamma, dbeta], [, xs]) {
    const d = xs![xs!.length - 1]!;
    const rows = x!.length / d;
    const dg = new Float64Array(d);
    const db = new Float64Array(d);
    for (let row = 0; row < rows; row++) {
      const off = row * d;
      const m = stats![row * 2]!;
      const r = stats![row * 2 + 1]!;
      let sg = 0;
      let sgx = 0;
      for (let j = 0; j < d; j++) {
        const xh = (x![off + j]! - m) * r;
        const g = dy![off + j]!;
        db[j]! += g;
        dg[j]! += g * xh;
        const gh = g * gamma![j]!;
        sg += gh;
        sgx += gh * xh;
      }
      const mg = sg / d;
      const mgx = sgx / d;
      for (let j = 0; j < d; j++) {
        const xh = (x![off + j]! - m) * r;
        dx![off + j] = r * (dy![off + j]! * gamma![j]! - mg - xh * mgx);
      }
    }
    dgamma!.set(dg);
    dbeta!.set(db);
  },
};

let registered = false;

export function registerFusedNorms(): void {
  for (const k of [groupNormKernel, groupNormGradKernel, layerNormKernel, layerNormGradKernel]) registerJsKernel(k);
  if (registered) return;
  registered = true;
  tf.registerGradient({
    kernelName: GROUP_NORM,
    inputsToSave: ['x', 'gamma', 'beta'],
    outputsToSave: [false, true],
    gradFunc: (dys, saved, attrs) => {
      const dy = (dys as tf.Tensor[])[0]!;
      const [x, gamma, beta, stats] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
      const [dx, dg, db] = runKernel(GROUP_NORM_GRAD, { dy, x, gamma, beta, stats }, attrs as Attrs);
      return { x: () => dx!, gamma: () => dg!, beta: () => db! };
    },
  });
  tf.registerGradient({
    kernelName: LAYER_NORM,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [false, true],
    gradFunc: (dys, saved) => {
      const dy = (dys as tf.Tensor[])[0]!;
      const [x, gamma, stats] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
      const [dx, dg, db] = runKernel(LAYER_NORM_GRAD, { dy, x, gamma, stats });
      return { x: () => dx!, gamma: () => dg!, beta: () => db! };
    },
  });
}

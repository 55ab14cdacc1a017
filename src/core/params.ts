/**
 * Model weights as a flat map from diffusers checkpoint keys to tensors in tfjs layout
 * (conv HWIO, linear [in, out]); model code addresses them by key, so loading needs no table.
 */
import * as tf from '@tensorflow/tfjs';
import { chunkKey, chunkRanges } from './row-chunks.js';

export type Params = Map<string, tf.Tensor>;
/** Expected key → shape (tfjs layout) for a model config; used for strict loading and init. */
export type ParamShapes = Map<string, number[]>;

/** The weight named `key`; a missing key is a programming or loading error that names it. */
export function param(p: Params, key: string): tf.Tensor {
  const t = p.get(key);
  if (!t) throw new Error(`missing weight "${key}"`);
  return t;
}

/** The weight named `key` if present (optional biases, optional blocks). */
export function optionalParam(p: Params, key: string): tf.Tensor | undefined {
  return p.get(key);
}

/** Total number of scalar parameters. */
export function countParams(shapes: ParamShapes | Params): number {
  let n = 0;
  for (const v of shapes.values()) n += Array.isArray(v) ? v.reduce((a, b) => a * b, 1) : v.size;
  return n;
}

export function disposeParams(p: Params): void {
  for (const t of p.values()) t.dispose();
  p.clear();
}

/** Kind of a weight, inferred from its key: drives initialisation and layout conversion. */
export function weightKind(key: string, rank: number): 'norm' | 'bias' | 'embedding' | 'conv' | 'linear' | 'other' {
  if (/(^|\.)(norm[^.]*|ln_[^.]*|layer_norm[^.]*|final_layer_norm|group_norm|norm_out|conv_norm_out)\.weight$/.test(key)) return 'norm';
  if (key.endsWith('.bias')) return 'bias';
  if (/(_embedding|embeddings)\.weight$/.test(key) && rank === 2) return 'embedding';
  if (rank === 4) return 'conv';
  if (rank === 2 && key.endsWith('.weight')) return 'linear';
  return 'other';
}

/**
 * Seeded random weights for a config, the way the reference pipelines were made: norms
 * 1 + 0.1·N(0,1), biases 0.05·N(0,1), matrices N(0,1)/√fan_in. Tests and from-scratch
 * training use it.
 */
export function initParams(shapes: ParamShapes, seed: number): Params {
  const out: Params = new Map();
  let i = 0;
  for (const [key, shape] of shapes) {
    const s = seed * 100_003 + i++;
    const kind = weightKind(key, shape.length);
    let t: tf.Tensor;
    if (kind === 'norm') t = tf.tidy(() => tf.add(1, tf.mul(0.1, tf.randomNormal(shape, 0, 1, 'float32', s))));
    else if (kind === 'bias' || shape.length === 1) t = tf.mul(0.05, tf.randomNormal(shape, 0, 1, 'float32', s));
    else {
      // tfjs layout: conv HWIO → fan_in = H·W·I; linear [in, out] → fan_in = in; embedding [V, D] → 1.
      const fanIn = kind === 'embedding' ? 1 : shape.slice(0, -1).reduce((a, b) => a * b, 1);
      const chunks = kind === 'embedding' ? chunkRanges(shape) : undefined;
      if (chunks) {
        // Larger than the device binds at once: row chunks, each drawn with its own seed.
        chunks.forEach((c, j) => out.set(chunkKey(key, c.start), tf.randomNormal([c.rows, shape[1]!], 0, 1 / Math.sqrt(fanIn), 'float32', s * 7919 + j)));
        continue;
      }
      t = tf.randomNormal(shape, 0, 1 / Math.sqrt(fanIn), 'float32', s);
    }
    out.set(key, t);
  }
  return out;
}

/**
 * AUTOMATIC1111's Checkpoint Merger over diffusers-named weight sources (modules/extras.py,
 * run_modelmerger), each merged tensor computed when it is read:
 *   weighted sum    A·(1 − M) + B·M
 *   add difference  A + (B − C)·M
 * in float32, operation by operation as PyTorch evaluates those expressions on float32 tensors
 * (the scalar rounded to float32 first), so the values are those A1111 writes from float32 inputs.
 *
 * As A1111: the output has A's tensors, configs and dtypes; integer tensors are A's; an
 * inpainting A (9 input channels) with an ordinary B (4) merges only the first 4 input channels
 * of the UNet's conv_in and keeps the mask and masked-image channels of A; the other way round
 * is refused ("A must be the inpainting model"). Where A1111 would silently keep A's tensor for a
 * key B lacks, or fail inside PyTorch on other shape mismatches, painter refuses before writing
 * anything and names the key: the models are of different architectures.
 */
import { PainterError } from '../errors.js';
import type { HostTensor } from './safetensors.js';
import { COMPONENTS, type Component, type ComponentSources } from './single-file.js';
import { weightView, type ViewEntry, type WeightSource } from './weight-source.js';

export type MergeMethod = 'weighted-sum' | 'add-difference';

export interface CheckpointMerge {
  method: MergeMethod;
  /** A1111's multiplier M. */
  multiplier: number;
  a: ComponentSources;
  b: ComponentSources;
  /** The model B's difference is taken from (add difference only). */
  c?: ComponentSources;
  /** The models' paths as the user gave them, for messages. */
  names: { a: string; b: string; c?: string };
}

export interface MergedSources {
  parts: ComponentSources;
  /** A is an inpainting model merged with ordinary ones (A1111 names such a result `.inpainting`). */
  inpainting: boolean;
}

const f32 = Math.fround;

function floats(t: HostTensor, where: string): Float32Array {
  if (!(t.data instanceof Float32Array)) throw new PainterError(`${where}: not a floating-point tensor`);
  return t.data;
}

/** How B's tensor lines up with A's: the same shape, or fewer input channels of a conv (inpainting A). */
function alignment(key: string, a: number[], b: number[], where: { b: string }): 'same' | 'channels' {
  if (a.join() === b.join()) return 'same';
  const sameButChannels = a.length === 4 && b.length === 4 && a[0] === b[0] && a[2] === b[2] && a[3] === b[3];
  if (sameButChannels && a[1]! < b[1]!) {
    throw new PainterError(`${where.b}: ${key} has ${b[1]} input channels, A's ${a[1]}: when merging an inpainting model with an ordinary one, the inpainting model must be A (the first model)`);
  }
  if (sameButChannels && b[1] === 4) return 'channels';
  throw new PainterError(`${where.b}: ${key} has shape [${b.join(', ')}], A's [${a.join(', ')}]; the models have different architectures and cannot be merged`);
}

/**
 * out = fn(a, b[, c]) elementwise, where b (and c) may cover only the first `b.shape[1]` input
 * channels of a conv weight [o, i, kh, kw]; the rest of A passes through.
 */
function combine(a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], fn: (x: number, i: number) => number): Float32Array {
  const out = Float32Array.from(a);
  if (aShape.join() === bShape.join()) {
    for (let i = 0; i < out.length; i++) out[i] = fn(a[i]!, i);
    return out;
  }
  const [o, ca, kh, kw] = aShape as [number, number, number, number];
  const cb = bShape[1]!;
  const plane = kh * kw;
  for (let oi = 0; oi < o; oi++) {
    for (let ci = 0; ci < cb; ci++) {
      const from = (oi * ca + ci) * plane;
      const at = (oi * cb + ci) * plane;
      for (let p = 0; p < plane; p++) out[from + p] = fn(a[from + p]!, at + p);
    }
  }
  return out;
}

function mergeComponent(component: Component, m: CheckpointMerge): { source: WeightSource; inpainting: boolean } {
  const a = m.a[component];
  const b = m.b[component];
  const c = m.c?.[component];
  const where = { a: `A (${m.names.a})`, b: `B (${m.names.b})`, c: `C (${m.names.c})` };
  const M = f32(m.multiplier);
  const oneMinusM = f32(1 - m.multiplier);
  let inpainting = false;
  const view = new Map<string, ViewEntry>();
  for (const [key, e] of a.entries) {
    const read = () => a.read(key);
    const passThrough: ViewEntry = { ...e, read, fileKey: a.fileKey?.(key) ?? key };
    if (e.dtype === 'I32' || e.dtype === 'I64') {
      view.set(key, passThrough);
      continue;
    }
    const eb = b.entries.get(key);
    if (!eb) throw new PainterError(`${where.b}: has no ${component} weight "${key}", which A has; the models have different architectures and cannot be merged`);
    if (alignment(`${component} weight "${key}"`, e.shape, eb.shape, where) === 'channels') inpainting = true;
    if (c) {
      const ec = c.entries.get(key);
      if (!ec) throw new PainterError(`${where.c}: has no ${component} weight "${key}", which B has; the models have different architectures and cannot be merged`);
      if (ec.shape.join() !== eb.shape.join()) throw new PainterError(`${where.c}: ${component} weight "${key}" has shape [${ec.shape.join(', ')}], B's [${eb.shape.join(', ')}]; B and C must have the same architecture`);
    }
    view.set(key, {
      ...passThrough,
      read: () => {
        const x = floats(a.read(key), `${where.a}: ${key}`);
        const y = floats(b.read(key), `${where.b}: ${key}`);
        if (m.method === 'weighted-sum') {
          // (1 − M)·A + M·B
          return { dtype: 'F32', shape: e.shape, data: combine(x, e.shape, y, eb.shape, (ai, i) => f32(f32(oneMinusM * ai) + f32(M * y[i]!))) };
        }
        // A + M·(B − C)
        const z = floats(c!.read(key), `${where.c}: ${key}`);
        return { dtype: 'F32', shape: e.shape, data: combine(x, e.shape, y, eb.shape, (ai, i) => f32(ai + f32(M * f32(y[i]! - z[i]!)))) };
      },
    });
  }
  return { source: weightView(`merge of ${a.path}`, view), inpainting };
}

/** The merged model's component sources; every shape is checked here, before anything is read. */
export function mergeCheckpoints(m: CheckpointMerge): MergedSources {
  if ((m.method === 'add-difference') !== (m.c !== undefined)) {
    throw new PainterError(m.c ? 'a weighted sum merges two models; add difference takes the third' : 'add difference needs a third model C (A + (B − C)·M)');
  }
  const merged = COMPONENTS.map((component) => [component, mergeComponent(component, m)] as const);
  return {
    parts: Object.fromEntries(merged.map(([k, v]) => [k, v.source])) as ComponentSources,
    inpainting: merged.some(([, v]) => v.inpainting),
  };
}

/**
 * The allocations of core/ops.ts, op for op, on symbolic tensors (see trace.ts). Each function
 * allocates what its twin's tfjs calls allocate, in the same order; a change to ops.ts that adds
 * or removes a full-size intermediate belongs here too (test/memory.test.ts compares the two).
 */
import { attentionSliceRows } from '../ops.js';
import { numel, type MemoryTrace, type Sym } from './trace.js';

/** An element-wise kernel whose output has the shape of `a` (the larger operand). */
export function ew(t: MemoryTrace, a: Sym, ...others: Sym[]): Sym {
  return t.op(a.shape, [a, ...others]);
}

/** A small constant tfjs creates for a scalar operand (`tf.mul(x, 0.5)`). */
function scalar(t: MemoryTrace): Sym {
  return t.op([], []);
}

/** ops.linear: reshape (shares the buffer), matMul, bias add, reshape back. */
export function linear(t: MemoryTrace, x: Sym, w: Sym, bias?: Sym): Sym {
  const inDim = x.shape[x.shape.length - 1]!;
  const outDim = w.shape[w.shape.length - 1]!;
  const rows = numel(x.shape) / inDim;
  let y = t.op([rows, outDim], [t.reshape(x, [rows, inDim]), w]);
  if (bias) y = ew(t, y, bias);
  return t.reshape(y, [...x.shape.slice(0, -1), outDim]);
}

/** Output side of a k×k conv with PyTorch padding. */
export function convOut(size: number, k: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - k) / stride) + 1;
}

/** ops.conv2d: one Conv2D kernel (padding handled inside), then the bias add. w is HWIO. */
export function conv2d(t: MemoryTrace, x: Sym, w: Sym, bias: Sym | undefined, stride = 1, padding = 0): Sym {
  const [n, h, wd] = x.shape as [number, number, number, number];
  const [k, , , cout] = w.shape as [number, number, number, number];
  let y = t.op([n, convOut(h, k, stride, padding), convOut(wd, k, stride, padding), cout], [x, w]);
  if (bias) y = ew(t, y, bias);
  return y;
}

/**
 * tf.moments: mean (wasm transposes to reduce non-innermost axes: scratch), cast (a copy),
 * sub, square, mean.
 */
function moments(t: MemoryTrace, x: Sym, statShape: number[], innermost: boolean): { mean: Sym; variance: Sym } {
  const full = numel(x.shape) * 4;
  if (!innermost) t.scratch(full);
  const mean = t.op(statShape, [x]);
  const cast = t.op(x.shape, [x], 'float32', 'none');
  const dev = ew(t, cast, mean);
  const sq = ew(t, dev);
  if (!innermost) t.scratch(full);
  return { mean, variance: t.op(statShape, [sq]) };
}

/** A fused norm kernel: the output and its statistics (kept for the gradient; ops.ts drops its own reference). */
function fusedNorm(t: MemoryTrace, x: Sym, statShape: number[], gamma: Sym, beta: Sym): Sym {
  const y = t.op(x.shape, [x, gamma, beta]);
  t.dispose(t.op(statShape, [x], 'float32', 'output'));
  return y;
}

/** ops.groupNorm over NHWC: fused kernel, or the composite of tf.moments and four element-wise ops. */
export function groupNorm(t: MemoryTrace, x: Sym, groups: number, gamma: Sym, beta: Sym): Sym {
  const [n, h, w, c] = x.shape as [number, number, number, number];
  if (t.fused) return fusedNorm(t, x, [n, groups, 2], gamma, beta);
  const g = t.reshape(x, [n, h * w, groups, c / groups]);
  const { mean, variance } = moments(t, g, [n, 1, groups, 1], false);
  const centred = ew(t, g, mean);
  const inv = t.op(variance.shape, [ew(t, variance, scalar(t))]);
  const normed = t.reshape(ew(t, centred, inv), x.shape);
  return ew(t, ew(t, normed, gamma), beta);
}

/** ops.groupNormSilu: one fused kernel, or silu(groupNorm(x)). */
export function groupNormSilu(t: MemoryTrace, x: Sym, groups: number, gamma: Sym, beta: Sym): Sym {
  if (t.fused) return groupNorm(t, x, groups, gamma, beta);
  return silu(t, groupNorm(t, x, groups, gamma, beta));
}

/** ops.layerNorm over the last axis. */
export function layerNorm(t: MemoryTrace, x: Sym, gamma: Sym, beta: Sym): Sym {
  if (t.fused) return fusedNorm(t, x, [numel(x.shape) / x.shape[x.shape.length - 1]!, 2], gamma, beta);
  const stat = [...x.shape.slice(0, -1), 1];
  const { mean, variance } = moments(t, x, stat, true);
  const centred = ew(t, x, mean);
  const inv = t.op(stat, [ew(t, variance, scalar(t))]);
  return ew(t, ew(t, ew(t, centred, inv), gamma), beta);
}

/** Sigmoid keeps its output for the gradient, not its input. */
function sigmoid(t: MemoryTrace, x: Sym): Sym {
  return t.op(x.shape, [x], 'float32', 'output');
}

export function silu(t: MemoryTrace, x: Sym): Sym {
  return ew(t, x, sigmoid(t, x));
}

export function gelu(t: MemoryTrace, x: Sym): Sym {
  const half = ew(t, x, scalar(t));
  const erf = ew(t, ew(t, x, scalar(t)));
  return ew(t, half, ew(t, erf, scalar(t)));
}

export function quickGelu(t: MemoryTrace, x: Sym): Sym {
  return ew(t, x, sigmoid(t, ew(t, x, scalar(t))));
}

export function relu(t: MemoryTrace, x: Sym): Sym {
  return ew(t, x);
}

/** ops.upsampleNearest2x: two concats (2× then 4× the input). */
export function upsampleNearest2x(t: MemoryTrace, x: Sym): Sym {
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const cols = t.reshape(t.op([n, h, w, 2 * c], [x, x]), [n, h, w * 2, c]);
  return t.reshape(t.op([n, h, w * 2, 2 * c], [cols, cols]), [n, h * 2, w * 2, c]);
}

/** tf.concat along the last axis or any other: one output buffer. */
export function concat(t: MemoryTrace, parts: Sym[], axis: number): Sym {
  const shape = [...parts[0]!.shape];
  const ax = axis < 0 ? shape.length + axis : axis;
  shape[ax] = parts.reduce((s, p) => s + p.shape[ax]!, 0);
  return t.op(shape, parts);
}

/** tf.split into equal parts along `axis`: one buffer per part. */
export function split(t: MemoryTrace, x: Sym, parts: number, axis: number): Sym[] {
  const shape = [...x.shape];
  const ax = axis < 0 ? shape.length + axis : axis;
  shape[ax] = shape[ax]! / parts;
  return Array.from({ length: parts }, () => t.op([...shape], [x], 'float32', 'none'));
}

/** Reshape (keeps its input for the gradient), then a transpose (keeps nothing). */
export function splitHeads(t: MemoryTrace, x: Sym, heads: number): Sym {
  const [b, l, c] = x.shape as [number, number, number];
  return t.op([b, heads, l, c / heads], [t.reshape(x, [b, l, heads, c / heads])], 'float32', 'none');
}

export function mergeHeads(t: MemoryTrace, x: Sym): Sym {
  const [b, h, l, d] = x.shape as [number, number, number, number];
  return t.reshape(t.op([b, l, h, d], [x], 'float32', 'none'), [b, l, h * d]);
}

/** softmax(q·kᵀ + mask)·v on split heads (painter's wasm matmul transposes K into scratch first). */
function attend(t: MemoryTrace, qh: Sym, kh: Sym, vh: Sym, mask?: Sym): Sym {
  const [b, h, lq] = qh.shape as [number, number, number, number];
  t.scratch(numel(kh.shape) * 4);
  let scores = t.op([b, h, lq, kh.shape[2]!], [qh, kh]);
  if (mask) scores = ew(t, scores, mask);
  const probs = t.op(scores.shape, [scores], 'float32', 'output');
  return t.op([b, h, lq, vh.shape[3]!], [probs, vh]);
}

/**
 * ops.attention: q scaled by 1/√d, heads split (transposes), then per slice of query rows
 * (ops.attentionSliceRows; one slice when the scores fit) scores, optional mask, softmax and PV,
 * each slice in its own tidy (checkpointed with `checkpointSlices`), the slices concatenated and
 * the heads merged.
 */
export function attention(t: MemoryTrace, q: Sym, k: Sym, v: Sym, heads: number, mask?: Sym, opts: { checkpointSlices?: boolean } = {}): Sym {
  const qh = splitHeads(t, ew(t, q, scalar(t)), heads);
  const kh = splitHeads(t, k, heads);
  const vh = splitHeads(t, v, heads);
  const [b, h, lq, d] = qh.shape as [number, number, number, number];
  const rows = attentionSliceRows(b, h, lq, kh.shape[2]!);
  const run = (tt: MemoryTrace, [qs, ks, vs]: readonly Sym[]) => attend(tt, qs!, ks!, vs!, mask);
  const slice = (qs: Sym) => (opts.checkpointSlices ? t.checkpoint([qs, kh, vh], run) : run(t, [qs, kh, vh]));
  if (rows >= lq) return mergeHeads(t, slice(qh));
  const slices: Sym[] = [];
  for (let start = 0; start < lq; start += rows) {
    const n = Math.min(rows, lq - start);
    slices.push(t.tidy(() => slice(t.op([b, h, n, d], [qh]))));
  }
  return mergeHeads(t, concat(t, slices, 2));
}

/**
 * Neural-network building blocks shared by the text encoder, UNet and VAE, written as plain
 * functions over NHWC tensors and weights in tfjs layout (conv HWIO, linear [in, out]).
 * Every op here runs and differentiates on every backend (see backend/kernels.ts). On wasm and
 * cpu, groupNorm, groupNormSilu and layerNorm run as fused kernels (backend/fused-norm.ts);
 * elsewhere, and for operands those kernels do not take, as the tf ops written out below.
 */
import * as tf from '@tensorflow/tfjs';
import { GROUP_NORM, LAYER_NORM } from '../backend/fused-norm.js';
import { hasKernel, runKernel } from '../backend/js-kernel.js';
import { tensorByteLimit } from '../backend/webgpu.js';
import { recomputedGrads } from './models/checkpoint.js';

/**
 * Whether painter's fused kernel `name` can take these operands: registered on the active
 * backend (wasm, cpu; never tensorflow), float32, per-channel affine weights of `channels`.
 */
function fusable(name: string, x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, channels: number): boolean {
  return (
    x.dtype === 'float32' &&
    gamma.dtype === 'float32' &&
    beta.dtype === 'float32' &&
    gamma.rank === 1 &&
    beta.rank === 1 &&
    gamma.size === channels &&
    beta.size === channels &&
    hasKernel(name)
  );
}

/** Runs a fused norm kernel and drops its statistics output (the tape keeps its own reference). */
function fusedNorm(name: string, x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, attrs: Record<string, unknown>): tf.Tensor {
  const [y, stats] = runKernel(name, { x, gamma, beta }, attrs);
  stats!.dispose();
  return y!;
}

/** y = x·W + b over the last axis; W is [in, out]. Reshaped to 2-D, the fast matmul path. */
export function linear(x: tf.Tensor, w: tf.Tensor, b?: tf.Tensor): tf.Tensor {
  const shape = x.shape;
  const inDim = shape[shape.length - 1]!;
  const outDim = w.shape[1]!;
  const x2 = x.reshape([-1, inDim]) as tf.Tensor2D;
  let y: tf.Tensor = tf.matMul(x2, w as tf.Tensor2D);
  if (b) y = tf.add(y, b);
  return y.reshape([...shape.slice(0, -1), outDim]);
}

/**
 * 2-D convolution padded as PyTorch pads (`padding` pixels on every side), not tfjs 'same'
 * (which pads 0 before and 1 after for stride 2). x is NHWC, w is HWIO.
 */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor, b: tf.Tensor | undefined, stride = 1, padding = 0): tf.Tensor4D {
  const pad: tf.backend_util.ExplicitPadding = [
    [0, 0],
    [padding, padding],
    [padding, padding],
    [0, 0],
  ];
  let y = tf.conv2d(x, w as tf.Tensor4D, stride, padding === 0 ? 'valid' : pad);
  if (b) y = tf.add(y, b);
  return y;
}

/** GroupNorm over NHWC (torch.nn.GroupNorm semantics: biased variance, eps inside the sqrt). */
export function groupNorm(x: tf.Tensor4D, groups: number, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  if (c % groups !== 0) throw new Error(`groupNorm: ${c} channels do not divide into ${groups} groups`);
  if (fusable(GROUP_NORM, x, gamma, beta, c)) return fusedNorm(GROUP_NORM, x, gamma, beta, { groups, eps, silu: false }) as tf.Tensor4D;
  const g = x.reshape([n, h * w, groups, c / groups]);
  const { mean, variance } = tf.moments(g, [1, 3], true);
  const normed = tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, eps))).reshape([n, h, w, c]);
  return tf.add(tf.mul(normed, gamma), beta);
}

/** silu(groupNorm(x)): one fused kernel where the backend has it. */
export function groupNormSilu(x: tf.Tensor4D, groups: number, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor4D {
  const c = x.shape[3];
  if (c % groups === 0 && fusable(GROUP_NORM, x, gamma, beta, c)) {
    return fusedNorm(GROUP_NORM, x, gamma, beta, { groups, eps, silu: true }) as tf.Tensor4D;
  }
  return silu(groupNorm(x, groups, gamma, beta, eps)) as tf.Tensor4D;
}

/** LayerNorm over the last axis. */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  if (fusable(LAYER_NORM, x, gamma, beta, x.shape[x.rank - 1]!)) return fusedNorm(LAYER_NORM, x, gamma, beta, { eps });
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), gamma), beta);
}

export function silu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(x));
}

/** Exact GELU, 0.5·x·(1 + erf(x/√2)), as torch's default. */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
}

/** CLIP's quick_gelu: x·σ(1.702x). */
export function quickGelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
}

/**
 * Nearest-neighbour ×2 upsampling (NHWC) by concat + reshape: duplicating channels then folding
 * them into width doubles each column, likewise rows. Exact on every backend, unlike
 * tf.image.resizeNearestNeighbor (its cpu gradient is wrong for batch > 1) or broadcastTo
 * (no gradient beyond rank 4).
 */
export function upsampleNearest2x(x: tf.Tensor4D): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const cols = tf.concat([x, x], 3).reshape([n, h, w * 2, c]);
  return tf.concat([cols, cols], 2).reshape([n, h * 2, w * 2, c]) as tf.Tensor4D;
}

/** Splits [B, L, H·D] into heads [B, H, L, D]. */
export function splitHeads(x: tf.Tensor, heads: number): tf.Tensor4D {
  const [b, l, c] = x.shape as [number, number, number];
  return x.reshape([b, l, heads, c / heads]).transpose([0, 2, 1, 3]) as tf.Tensor4D;
}

/** Merges heads [B, H, L, D] back into [B, L, H·D]. */
export function mergeHeads(x: tf.Tensor4D): tf.Tensor3D {
  const [b, h, l, d] = x.shape;
  return x.transpose([0, 2, 1, 3]).reshape([b, l, h * d]) as tf.Tensor3D;
}

let sliceBytesOverride: number | undefined;

/**
 * The most bytes one slice of attention scores may take: 128 MiB, or what the device binds at
 * once if that is less. Scores of SD-1.5 at 512² are 2·8·4096² floats (1 GiB) per attention.
 */
export function attentionSliceBytes(): number {
  return Math.min(sliceBytesOverride ?? 128 * 2 ** 20, tensorByteLimit());
}

/** Tests lower the slice size to exercise slicing on small models; undefined restores it. */
export function setAttentionSliceBytes(bytes: number | undefined): void {
  sliceBytesOverride = bytes;
}

/** Query rows per slice for scores [B, H, Lq, Lk] (all of them when they fit one slice). */
export function attentionSliceRows(batch: number, heads: number, queries: number, keys: number): number {
  return Math.min(queries, Math.max(1, Math.floor(attentionSliceBytes() / (batch * heads * keys * 4))));
}

export interface AttentionOptions {
  /**
   * Gradient checkpointing of each slice: its scores and probabilities are recomputed in the
   * backward pass, so a taped run keeps only Q, K and V (with UNet gradient checkpointing).
   */
  checkpointSlices?: boolean;
  /**
   * Edits the probabilities [B, H, rows, Lk] before they weigh the values (inference only; see
   * AttentionControl); `rowStart` is the first query row of a slice.
   */
  editProbs?: (probs: tf.Tensor, rowStart: number) => tf.Tensor;
}

/** softmax(q·kᵀ + mask)·v on heads already split: [B, H, Lq, d]. */
function attend(qh: tf.Tensor, kh: tf.Tensor, vh: tf.Tensor, mask?: tf.Tensor, edit?: (probs: tf.Tensor) => tf.Tensor): tf.Tensor4D {
  let scores: tf.Tensor = tf.matMul(qh, kh, false, true);
  if (mask) scores = tf.add(scores, mask);
  const probs = tf.softmax(scores, -1);
  return tf.matMul(edit ? edit(probs) : probs, vh) as tf.Tensor4D;
}

/** One slice of attention under tf.customGrad: recomputed in the backward pass. */
function attendCheckpointed(qh: tf.Tensor, kh: tf.Tensor, vh: tf.Tensor, mask?: tf.Tensor): tf.Tensor4D {
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [q, k, v] = args as tf.Tensor[];
    // The mask is saved too: a causal mask made inside the caller's tidy is gone by the backward pass.
    save(mask ? [q!, k!, v!, mask] : [q!, k!, v!]);
    return {
      value: attend(q!, k!, v!, mask),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => recomputedGrads(() => attend(saved[0]!, saved[1]!, saved[2]!, saved[3]), saved.slice(0, 3), dy),
    };
  });
  return run(qh, kh, vh) as tf.Tensor4D;
}

/**
 * Scaled dot-product attention on [B, L, C] inputs split into `heads`; `mask` is added to the
 * scores (e.g. a causal mask of -Inf above the diagonal), broadcastable to [B, H, Lq, Lk].
 * Scores larger than attentionSliceBytes() are computed in slices of query rows, each freed
 * before the next (diffusers' attention slicing): softmax is per row, so the result is the same.
 */
export function attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, heads: number, mask?: tf.Tensor, opts: AttentionOptions = {}): tf.Tensor3D {
  // 1/√d scales q ([B, L, C]) rather than the scores ([B, H, L, S]): the same product without a
  // second scores-sized tensor (at 64×64 latents that is 2·8·4096² floats, 1 GiB, per attention).
  const d = q.shape[q.rank - 1]! / heads;
  const qh = splitHeads(tf.mul(q, 1 / Math.sqrt(d)), heads);
  const kh = splitHeads(k, heads);
  const vh = splitHeads(v, heads);
  const [b, h, lq] = qh.shape;
  const rows = attentionSliceRows(b, h, lq, kh.shape[2]);
  if (opts.editProbs && opts.checkpointSlices) throw new Error('attention: editProbs is for inference, not checkpointed training');
  const edit = opts.editProbs;
  const run = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, m: tf.Tensor | undefined, rowStart: number) =>
    opts.checkpointSlices ? attendCheckpointed(a, b, c, m) : attend(a, b, c, m, edit && ((p) => edit(p, rowStart)));
  if (rows >= lq) return mergeHeads(run(qh, kh, vh, mask, 0));
  const slices: tf.Tensor[] = [];
  for (let start = 0; start < lq; start += rows) {
    const n = Math.min(rows, lq - start);
    slices.push(
      tf.tidy(() => {
        const qs = qh.slice([0, 0, start, 0], [-1, -1, n, -1]);
        // A mask with a row per query is sliced with the queries; a broadcast one is shared.
        const ms = mask && mask.shape[mask.rank - 2] === lq ? sliceAxis(mask, mask.rank - 2, start, n) : mask;
        return run(qs, kh, vh, ms, start);
      }),
    );
  }
  return mergeHeads(tf.concat(slices, 2) as tf.Tensor4D);
}

function sliceAxis(x: tf.Tensor, axis: number, start: number, size: number): tf.Tensor {
  const begin = x.shape.map((_, i) => (i === axis ? start : 0));
  const sizes = x.shape.map((d, i) => (i === axis ? size : d));
  return x.slice(begin, sizes);
}

/** Rows of an embedding table [V, D] for integer ids of any shape → [...ids.shape, D]. */
export function embeddingLookup(table: tf.Tensor, ids: tf.Tensor): tf.Tensor {
  return tf.gather(table, ids.toInt());
}

/**
 * LyCORIS adapters (KohakuBlueleaf/LyCORIS, `lycoris/functional/{loha,lokr,general}.py`) whose
 * update is not one down/up pair: LoHa, LoKr and LoCon with a Tucker core (`lora_mid`). Their
 * factors are kept as the file stores them (PyTorch layout: weights [out, in(, kh, kw)]); the
 * update ΔW is rebuilt in that layout, where the formulas read as in LyCORIS, and turned into the
 * adapted weight's tfjs layout once, at the end of `lycorisDelta`.
 *
 * - LoHa (Hadamard product, FedPara): ΔW = γ · (w1a @ w1b) ⊙ (w2a @ w2b), with w1a/w2a [out, r],
 *   w1b/w2b [r, in·kh·kw]; with Tucker cores t1/t2 [r, r, kh, kw] each factor is instead
 *   tucker(t, wa [r, out], wb [r, in]). γ = α / r (r = rows of w1b; no α: 1).
 * - LoKr (Kronecker product): ΔW = γ · w1 ⊗ w2, w1 [a, c] (full, or w1a @ w1b), w2 [b, d(, kh,
 *   kw)] (full, w2a @ w2b, or tucker(t2, w2a, w2b)); out = a·b, in = c·d. γ = α / r where r is
 *   the rank of the decomposed factor (w1b's rows, else w2b's rows); γ = 1 when both factors are
 *   full or there is no α.
 * - LoCon-Tucker: ΔW = γ · tucker(mid, upᵀ, down), up [out, r], mid [r, r, kh, kw], down [r, in];
 *   γ = α / r.
 *
 * tucker(t, wa, wb)[o, i, …] = Σ_{p,q} t[p, q, …] · wa[p, o] · wb[q, i]  (LyCORIS rebuild_tucker,
 * einsum "i j ..., i p, j r -> p r ...").
 *
 * An α of 0 means "no α" (LyCORIS: `alpha = lora_dim if alpha is None or alpha == 0`).
 */
import * as tf from '@tensorflow/tfjs';
import type { DoraMagnitude } from './lora-dora.js';

interface AdapterBase {
  component: 'unet' | 'text_encoder';
  /** The adapted module as diffusers/transformers name it; the weight is `${module}.weight`. */
  module: string;
  /** Network alpha (absent: factor 1). */
  alpha?: number;
  /** DoRA magnitude (the file's `dora_scale`), when the module is weight-decomposed. */
  dora?: DoraMagnitude;
  /** A file key of this module, for messages. */
  key: string;
}

export interface LohaAdapter extends AdapterBase {
  kind: 'loha';
  /** [out, r], or [r, out] with Tucker cores. */
  w1a: tf.Tensor;
  /** [r, in·kh·kw], or [r, in] with Tucker cores. */
  w1b: tf.Tensor;
  w2a: tf.Tensor;
  w2b: tf.Tensor;
  /** Tucker cores [r, r, kh, kw] (conv only; both or neither). */
  t1?: tf.Tensor;
  t2?: tf.Tensor;
}

export interface LokrAdapter extends AdapterBase {
  kind: 'lokr';
  /** Either w1 [a, c] or w1a [a, r] and w1b [r, c]. */
  w1?: tf.Tensor;
  w1a?: tf.Tensor;
  w1b?: tf.Tensor;
  /** Either w2 [b, d(, kh, kw)] or w2a and w2b ([b, r] and [r, d·kh·kw]; with t2: [r, b] and [r, d]). */
  w2?: tf.Tensor;
  w2a?: tf.Tensor;
  w2b?: tf.Tensor;
  /** Tucker core of w2 [r, r, kh, kw]. */
  t2?: tf.Tensor;
}

export interface LoconTuckerAdapter extends AdapterBase {
  kind: 'locon-tucker';
  /** [r, in] (the file's [r, in, 1, 1]). */
  down: tf.Tensor;
  /** [r, r, kh, kw] */
  mid: tf.Tensor;
  /** [out, r] (the file's [out, r, 1, 1]). */
  up: tf.Tensor;
}

export type LycorisAdapter = LohaAdapter | LokrAdapter | LoconTuckerAdapter;

/** The tensors an adapter owns (for dispose). */
export function lycorisTensors(a: LycorisAdapter): tf.Tensor[] {
  const own = (...ts: (tf.Tensor | undefined)[]) => [...ts, a.dora?.magnitude].filter((t): t is tf.Tensor => t !== undefined);
  switch (a.kind) {
    case 'loha':
      return own(a.w1a, a.w1b, a.w2a, a.w2b, a.t1, a.t2);
    case 'lokr':
      return own(a.w1, a.w1a, a.w1b, a.w2, a.w2a, a.w2b, a.t2);
    case 'locon-tucker':
      return own(a.down, a.mid, a.up);
  }
}

/** The rank the file's α is divided by (undefined: no scaling, as for a LoKr of two full factors). */
export function lycorisRank(a: LycorisAdapter): number | undefined {
  switch (a.kind) {
    case 'loha':
      return a.w1b.shape[0];
    case 'lokr':
      return a.w1b ? a.w1b.shape[0] : a.w2b?.shape[0];
    case 'locon-tucker':
      return a.down.shape[0];
  }
}

/** The file's own factor γ (α / r; 1 without α, and 1 for a LoKr of two full factors). */
export function lycorisScale(a: LycorisAdapter): number {
  const rank = lycorisRank(a);
  return rank === undefined || a.alpha === undefined || a.alpha === 0 ? 1 : a.alpha / rank;
}

/** tucker(t, wa, wb)[o, i, …] = Σ_{p,q} t[p, q, …] wa[p, o] wb[q, i]; t [P, Q, …k], wa [P, out], wb [Q, in]. */
function tucker(t: tf.Tensor, wa: tf.Tensor, wb: tf.Tensor): tf.Tensor {
  const [p, q, ...k] = t.shape as number[];
  const kk = k.reduce((x, y) => x * y, 1);
  const out = wa.shape[1]!;
  const inn = wb.shape[1]!;
  const a = tf.matMul(wa, t.reshape([p!, q! * kk]), true, false); // [out, Q·K]
  const b = tf.matMul(a.reshape([out, q!, kk]).transpose([0, 2, 1]).reshape([out * kk, q!]), wb); // [out·K, in]
  return b.reshape([out, kk, inn]).transpose([0, 2, 1]).reshape([out, inn, ...k]);
}

/** kron(A, B) of matrices: [a, c] ⊗ [b, e] → [a·b, c·e]. */
function kron(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const [ra, ca] = a.shape as [number, number];
  const [rb, cb] = b.shape as [number, number];
  return tf.mul(a.reshape([ra, 1, ca, 1]), b.reshape([1, rb, 1, cb])).reshape([ra * rb, ca * cb]);
}

/** A rebuilt factor as a matrix [rows, everything else]. */
function flat(t: tf.Tensor): tf.Tensor {
  return t.reshape([t.shape[0]!, -1]);
}

/** ΔW / γ in PyTorch layout, as a matrix [out, in·kh·kw] (or [out, in, kh, kw] from Tucker cores). */
function torchDelta(a: LycorisAdapter): tf.Tensor {
  switch (a.kind) {
    case 'loha': {
      const h1 = a.t1 ? tucker(a.t1, a.w1a, a.w1b) : tf.matMul(a.w1a, flat(a.w1b));
      const h2 = a.t2 ? tucker(a.t2, a.w2a, a.w2b) : tf.matMul(a.w2a, flat(a.w2b));
      return tf.mul(flat(h1), flat(h2));
    }
    case 'lokr': {
      const w1 = a.w1 ?? tf.matMul(a.w1a!, a.w1b!);
      const w2 = a.w2 ?? (a.t2 ? tucker(a.t2, a.w2a!, a.w2b!) : tf.matMul(a.w2a!, flat(a.w2b!)));
      // A 4-D w2 [b, d, kh, kw] as [b, d·kh·kw]: kron(w1, w2) keeps each kernel whole.
      return kron(flat(w1), flat(w2));
    }
    case 'locon-tucker':
      return tucker(a.mid, a.up.transpose(), a.down);
  }
}

/** The PyTorch-layout shape [out, in(, kh, kw)] of a weight in tfjs layout ([in, out] or HWIO). */
export function torchShapeOf(tfjsShape: readonly number[]): number[] {
  return tfjsShape.length === 4 ? [tfjsShape[3]!, tfjsShape[2]!, tfjsShape[0]!, tfjsShape[1]!] : [...tfjsShape].reverse();
}

/**
 * The rows and columns (out, in·kh·kw) the adapter's ΔW has, and its kernel [kh, kw] where the
 * factors fix one (Tucker cores, a 4-D LoKr w2), from the shapes alone, to check a file against a
 * model before anything is computed.
 */
export function lycorisDeltaSize(a: LycorisAdapter): { out: number; inFlat: number; kernel?: number[] } {
  const cols = (t: tf.Tensor) => t.shape.slice(1).reduce((x, y) => x * y, 1);
  const kernel = (t: tf.Tensor) => t.shape.slice(2);
  const area = (t: tf.Tensor) => kernel(t).reduce((x, y) => x * y, 1);
  switch (a.kind) {
    case 'loha':
      return a.t1 ? { out: a.w1a.shape[1]!, inFlat: a.w1b.shape[1]! * area(a.t1), kernel: kernel(a.t1) } : { out: a.w1a.shape[0]!, inFlat: cols(a.w1b) };
    case 'lokr': {
      const w1 = a.w1 ? [a.w1.shape[0]!, cols(a.w1)] : [a.w1a!.shape[0]!, cols(a.w1b!)];
      const w2 = a.w2 ? [a.w2.shape[0]!, cols(a.w2)] : a.t2 ? [a.w2a!.shape[1]!, a.w2b!.shape[1]! * area(a.t2)] : [a.w2a!.shape[0]!, cols(a.w2b!)];
      const k = a.t2 ? kernel(a.t2) : a.w2 && a.w2.rank === 4 ? kernel(a.w2) : undefined;
      return { out: w1[0]! * w2[0]!, inFlat: w1[1]! * w2[1]!, kernel: k };
    }
    case 'locon-tucker':
      return { out: a.up.shape[0]!, inFlat: a.down.shape[1]! * area(a.mid), kernel: kernel(a.mid) };
  }
}

/**
 * ΔW = γ · (the adapter's update) in the tfjs layout of the adapted weight, whose shape is
 * `weightShape` ([in, out] or [kh, kw, in, out]). The caller has checked the sizes
 * (lycorisDeltaSize) and the kernel of Tucker cores against the weight.
 */
export function lycorisDelta(a: LycorisAdapter, weightShape: readonly number[]): tf.Tensor {
  return tf.tidy(() => {
    const torch = tf.mul(torchDelta(a), lycorisScale(a)).reshape(torchShapeOf(weightShape));
    return weightShape.length === 4 ? torch.transpose([2, 3, 1, 0]) : torch.transpose([1, 0]);
  });
}

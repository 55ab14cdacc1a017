/**
 * PyTorch ⇄ tfjs weight layouts, converted once at load and inversely at save:
 * conv OIHW ⇄ HWIO, linear [out, in] ⇄ [in, out]; embeddings, norms and biases unchanged.
 */
import { weightKind } from '../core/params.js';

export interface FloatArrayTensor {
  shape: number[];
  data: Float32Array;
}

function transpose(t: FloatArrayTensor, perm: number[]): FloatArrayTensor {
  const shape = perm.map((p) => t.shape[p]!);
  const rank = t.shape.length;
  const inStrides = new Array<number>(rank);
  let s = 1;
  for (let d = rank - 1; d >= 0; d--) {
    inStrides[d] = s;
    s *= t.shape[d]!;
  }
  const permStrides = perm.map((p) => inStrides[p]!);
  const out = new Float32Array(t.data.length);
  const idx = new Array<number>(rank).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let d = 0; d < rank; d++) src += idx[d]! * permStrides[d]!;
    out[o] = t.data[src]!;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return { shape, data: out };
}

/** PyTorch layout → tfjs layout for the weight named `key`. */
export function torchToTfjs(key: string, t: FloatArrayTensor): FloatArrayTensor {
  const kind = weightKind(key, t.shape.length);
  if (kind === 'conv') return transpose(t, [2, 3, 1, 0]); // OIHW → HWIO
  if (kind === 'linear') return transpose(t, [1, 0]);
  return t;
}

/** tfjs layout → PyTorch layout (inverse of torchToTfjs). */
export function tfjsToTorch(key: string, t: FloatArrayTensor): FloatArrayTensor {
  const kind = weightKind(key, t.shape.length);
  if (kind === 'conv') return transpose(t, [3, 2, 0, 1]); // HWIO → OIHW
  if (kind === 'linear') return transpose(t, [1, 0]);
  return t;
}

/** Shape in tfjs layout of a PyTorch-layout shape. */
export function tfjsShape(key: string, torchShape: number[]): number[] {
  const kind = weightKind(key, torchShape.length);
  if (kind === 'conv') return [torchShape[2]!, torchShape[3]!, torchShape[1]!, torchShape[0]!];
  if (kind === 'linear') return [torchShape[1]!, torchShape[0]!];
  return torchShape;
}

/** Shape in PyTorch layout of a tfjs-layout shape (inverse of tfjsShape). */
export function torchShape(key: string, tfjsShapeOf: readonly number[]): number[] {
  const kind = weightKind(key, tfjsShapeOf.length);
  if (kind === 'conv') return [tfjsShapeOf[3]!, tfjsShapeOf[2]!, tfjsShapeOf[0]!, tfjsShapeOf[1]!];
  if (kind === 'linear') return [tfjsShapeOf[1]!, tfjsShapeOf[0]!];
  return [...tfjsShapeOf];
}

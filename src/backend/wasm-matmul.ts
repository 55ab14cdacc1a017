/**
 * A faster BatchMatMul for the wasm backend. tfjs-backend-wasm 4.22 sends a matmul to XNNPACK's
 * GEMM only when neither operand is transposed and both batches are 1; everything else (every
 * matmul gradient, all attention products) runs a scalar triple loop at ~1 GFLOP/s instead of
 * ~20. This kernel brings every case to the fast one:
 * - a transposed operand is transposed explicitly first (the Transpose kernel is a memory pass);
 * - a batch against a shared matrix (b batch 1) is one GEMM over the stacked rows of a;
 * - a batch against a batch is one GEMM per batch element, on views into the operands' and the
 *   output's memory (tensors registered at an offset, no copies).
 * Results equal the original kernel's up to float summation order.
 */
import * as tf from '@tensorflow/tfjs';
import { gemm, type WasmBackend } from './wasm-gemm.js';

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Wraps the original kernel; `original` handles what this one does not (non-float, odd broadcasts). */
export function makeWasmBatchMatMul(original: tf.KernelConfig): tf.KernelFunc {
  const transposeKernel = tf.getKernel('Transpose', 'wasm')!.kernelFunc;

  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const a = args.inputs['a']!;
    const b = args.inputs['b']!;
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const ar = a.shape.length;
    const br = b.shape.length;
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const batchA = outerA.reduce((x, y) => x * y, 1);
    const batchB = outerB.reduce((x, y) => x * y, 1);
    const m = transposeA ? a.shape[ar - 1]! : a.shape[ar - 2]!;
    const k = transposeA ? a.shape[ar - 2]! : a.shape[ar - 1]!;
    const kb = transposeB ? b.shape[br - 1]! : b.shape[br - 2]!;
    const n = transposeB ? b.shape[br - 2]! : b.shape[br - 1]!;
    const batchShapesOk = batchB === 1 || batchA === 1 || sameShape(outerA, outerB);
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || k !== kb || m * n * k === 0 || !batchShapesOk) {
      return original.kernelFunc(args);
    }

    const temps: tf.TensorInfo[] = [];
    const swapLastTwo = (t: tf.TensorInfo): tf.TensorInfo => {
      const r = t.shape.length;
      const perm = [...Array(r - 2).keys(), r - 1, r - 2];
      const out = transposeKernel({ inputs: { x: t }, backend: args.backend, attrs: { perm } }) as tf.TensorInfo;
      temps.push(out);
      return out;
    };
    const outBatch = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
    const batch = Math.max(batchA, batchB);
    // C = A'·B' directly needs A' as [m, k] and B' as [k, n]; Cᵀ = B'ᵀ·A'ᵀ needs B'ᵀ as [n, k] and
    // A'ᵀ as [k, m], then C back from Cᵀ. Each route costs its transposes plus XNNPACK's packing of
    // the right operand: cheap once, expensive per batch element (an operator is created for
    // each). Weights measured on tfjs-wasm 4.22 (e.g. a [512,256]ᵀ·[512,64] weight gradient is
    // 1.5× faster through Cᵀ; Pᵀ·dO in attention is faster directly).
    const pack = batch > 1 ? 3 : 0.5;
    const direct = (transposeA ? batchA * m * k : 0) + (transposeB ? batchB * k * n : 0) + pack * batchB * k * n;
    const viaTranspose = (transposeB ? 0 : batchB * k * n) + (transposeA ? 0 : batchA * m * k) + batch * m * n + pack * batchA * k * m;
    try {
      if ((!transposeA && !transposeB) || direct <= viaTranspose) {
        const out = backend.makeOutput([...outBatch, m, n], 'float32');
        gemmAll(backend, transposeA ? swapLastTwo(a) : a, transposeB ? swapLastTwo(b) : b, out, batchA, batchB, m, k, n);
        return out;
      }
      const outT = backend.makeOutput([...outBatch, n, m], 'float32');
      temps.push(outT);
      gemmAll(backend, transposeB ? b : swapLastTwo(b), transposeA ? a : swapLastTwo(a), outT, batchB, batchA, n, k, m);
      return transposeKernel({ inputs: { x: outT }, backend: args.backend, attrs: { perm: [...Array(outBatch.length).keys(), outBatch.length + 1, outBatch.length] } }) as tf.TensorInfo;
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  };

}

/** out[i] = a[i]·b[i] for row-major a [batchA, m, k], b [batchB, k, n] (a batch of 1 is shared). */
function gemmAll(backend: WasmBackend, a: tf.TensorInfo, b: tf.TensorInfo, out: tf.TensorInfo, batchA: number, batchB: number, m: number, k: number, n: number): void {
  if (batchB === 1) {
    // Rows of every batch element of a stacked: one [batchA·m, k] × [k, n] GEMM, b as a whole
    // tensor so that XNNPACK reuses its packed weights across calls (inference).
    gemm(backend, { t: a }, { t: b }, { t: out }, batchA * m, k, n);
    return;
  }
  for (let i = 0; i < Math.max(batchA, batchB); i++) {
    gemm(backend, { t: a, offset: batchA === 1 ? 0 : i * m * k }, { t: b, offset: i * k * n }, { t: out, offset: i * m * n }, m, k, n);
  }
}

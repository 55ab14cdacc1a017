/**
 * Sum over leading axes on the wasm backend (the bias gradient of every broadcast add: a
 * [N, H, W, C] or [rows, C] gradient summed down to [C]). tfjs-backend-wasm reduces only the
 * innermost axes, so it first transposes the whole input; column sums need no transpose
 * ([512, 512] → [512] in 0.15 ms, against 1 ms row by row and more through the transpose). Other reductions go to the original kernel. Sums accumulate in
 * float64.
 */
import * as tf from '@tensorflow/tfjs';
import { columnSums } from './column-sums.js';

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

export function makeWasmSum(original: tf.KernelConfig): tf.KernelFunc {
  return (args) => {
    const x = args.inputs['x']!;
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    const rank = x.shape.length;
    const axes = [...new Set((Array.isArray(axis) ? axis : [axis]).map((a) => (a < 0 ? a + rank : a)))].sort((a, b) => a - b);
    const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
    if (x.dtype !== 'float32' || !leading) return original.kernelFunc(args);
    const backend = args.backend as unknown as WasmBackendLike;
    const inner = x.shape.slice(axes.length).reduce((a, b) => a * b, 1);
    const outShape = keepDims ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : x.shape.slice(axes.length);
    const out = backend.makeOutput(outShape, 'float32');
    const src = backend.typedArrayFromHeap(x);
    const dst = backend.typedArrayFromHeap(out);
    const acc = new Float64Array(inner);
    columnSums(src, 0, src.length, inner, acc);
    dst.set(acc);
    return out;
  };
}

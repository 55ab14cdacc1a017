/**
 * Kernel fixes so that training works on every backend (see shared TFJS-NOTES), and the
 * registration of painter's speed kernels for the wasm and cpu backends (never tensorflow):
 * wasm BatchMatMul (wasm-matmul.ts), Sum (wasm-reduce.ts) and Identity (below) replacements,
 * the wasm stride-1 conv filter gradient as GEMMs (wasm-conv-filter-grad.ts), fused
 * GroupNorm/LayerNorm (fused-norm.ts), AdamW (fused-adamw.ts) and the conv filter flip
 * (conv-kernels.ts). setFastKernels(false) switches the speed kernels off.
 *
 * The fixes:
 * - wasm has no UnsortedSegmentSum, which the gradient of `tf.gather` (embedding lookup) needs:
 *   registered here as a plain JS kernel over the wasm heap.
 * - wasm has no Conv2DBackpropFilter and its Conv2DBackpropInput is a slow scalar loop; the
 *   cpu backend spends most of a training step in its Conv2DBackpropFilter. On every backend but
 *   tensorflow, the gradient of Conv2D is therefore computed with forward Conv2D kernels, which
 *   are fast everywhere (XNNPACK on wasm).
 * The cpu backend's wrong ResizeNearestNeighborGrad (batch > 1) is avoided by the model code,
 * which upsamples by broadcast + reshape (core/ops.ts), never by resizeNearestNeighbor.
 */
import * as tf from '@tensorflow/tfjs';
import { FLIP_FILTER, registerConvKernels } from './conv-kernels.js';
import { registerFusedAdamW } from './fused-adamw.js';
import { registerFusedNorms } from './fused-norm.js';
import { hasKernel, runKernel, setJsKernelsEnabled } from './js-kernel.js';
import { conv2dFilterGradWasm, WASM_CONV_FILTER_GRAD } from './wasm-conv-filter-grad.js';
import { makeWasmBatchMatMul } from './wasm-matmul.js';
import { makeWasmSum } from './wasm-reduce.js';
import { activeBackendSpec } from './table.js';
import { registerWebgpuKernels } from './webgpu-kernels.js';

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  incRef(dataId: object): void;
}

/**
 * Identity that shares the input's memory (as Reshape does, and the cpu backend's Identity)
 * instead of copying it. Tensors are immutable, so sharing is safe; the engine clones every
 * tensor it saves for backprop, so the copy cost a full pass over each saved activation.
 */
function hasWasmKernel(name: string): boolean {
  return tf.getKernel(name, 'wasm') !== undefined;
}

function makeWasmIdentity(original: tf.KernelConfig): tf.KernelFunc {
  return (args) => {
    const x = args.inputs['x']!;
    if (x.dtype === 'string') return original.kernelFunc(args);
    (args.backend as unknown as WasmBackendLike).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

function unsortedSegmentSumWasm(args: {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}): tf.TensorInfo {
  const backend = args.backend as WasmBackendLike;
  const x = args.inputs['x']!;
  const segmentIds = args.inputs['segmentIds']!;
  const numSegments = args.attrs!['numSegments'] as number;
  const innerShape = x.shape.slice(segmentIds.shape.length);
  const inner = innerShape.reduce((a, b) => a * b, 1);
  // Allocate first: growing the wasm heap detaches views taken before.
  const out = backend.makeOutput([numSegments, ...innerShape], x.dtype);
  const o = backend.typedArrayFromHeap(out);
  const xs = backend.typedArrayFromHeap(x);
  const ids = backend.typedArrayFromHeap(segmentIds);
  o.fill(0);
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue; // TensorFlow drops out-of-range ids
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) o[dst + j]! += xs[src + j]!;
  }
  return out;
}

/** Inserts (s-1) zeros between neighbours along H and W: the "dilated" dy of a strided conv. */
function dilateSpatial(dy: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  const [n, oh, ow, c] = dy.shape;
  let t: tf.Tensor = dy;
  if (sw > 1) {
    const zeros = tf.zerosLike(t);
    t = tf.stack([t, ...Array<tf.Tensor>(sw - 1).fill(zeros)], 3).reshape([n, oh, ow * sw, c]);
    t = t.slice([0, 0, 0, 0], [n, oh, (ow - 1) * sw + 1, c]);
  }
  if (sh > 1) {
    const w = t.shape[2]!;
    const zeros = tf.zerosLike(t);
    t = tf.stack([t, ...Array<tf.Tensor>(sh - 1).fill(zeros)], 2).reshape([n, oh * sh, w, c]);
    t = t.slice([0, 0, 0, 0], [n, (oh - 1) * sh + 1, w, c]);
  }
  return t as tf.Tensor4D;
}

/** Pads (or crops, for negative amounts) H and W. */
function padOrCrop(t: tf.Tensor4D, top: number, bottom: number, left: number, right: number): tf.Tensor4D {
  const [n, h, w, c] = t.shape;
  const padded = tf.pad(t, [[0, 0], [Math.max(0, top), Math.max(0, bottom)], [Math.max(0, left), Math.max(0, right)], [0, 0]]);
  const ct = Math.max(0, -top);
  const cl = Math.max(0, -left);
  const hh = h + top + bottom;
  const ww = w + left + right;
  if (ct === 0 && cl === 0 && hh === padded.shape[1] && ww === padded.shape[2]) return padded;
  return padded.slice([0, ct, cl, 0], [n, hh, ww, c]);
}

/** dL/dfilter of an NHWC conv, as a Conv2D over transposed tensors (batch ↔ channels). */
export function conv2dFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: [number, number, number, number],
  info: tf.backend_util.Conv2DInfo,
): tf.Tensor4D {
  const [kh, kw, ci, co] = filterShape;
  const { top, bottom, left, right } = info.padInfo;
  const stride1 = info.strideHeight === 1 && info.strideWidth === 1;
  if (fastKernelsOn && stride1 && Math.min(top, bottom, left, right) >= 0 && tf.getBackend() === 'wasm' && hasWasmKernel(WASM_CONV_FILTER_GRAD)) {
    const attrs = { filterHeight: kh, filterWidth: kw, padTop: top, padLeft: left };
    return tf.engine().runKernel(WASM_CONV_FILTER_GRAD, { x, dy }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor4D;
  }
  const dyt = dy.transpose([1, 2, 0, 3]) as tf.Tensor4D; // [OH, OW, N, Co] used as a filter
  const dilations: [number, number] = [info.strideHeight, info.strideWidth];
  let r: tf.Tensor4D; // [Ci, ≥KH, ≥KW, Co]
  if (Math.min(top, bottom, left, right) >= 0) {
    // The convolution pads (no padded copy of x).
    const xt = x.transpose([3, 1, 2, 0]) as tf.Tensor4D; // [Ci, H, W, N]
    r = tf.conv2d(xt, dyt, 1, [[0, 0], [top, bottom], [left, right], [0, 0]], 'NHWC', dilations);
  } else {
    const xt = padOrCrop(x, top, bottom, left, right).transpose([3, 1, 2, 0]) as tf.Tensor4D; // [Ci, Hp, Wp, N]
    r = tf.conv2d(xt, dyt, 1, 'valid', 'NHWC', dilations);
  }
  return r.slice([0, 0, 0, 0], [ci, kh, kw, co]).transpose([1, 2, 0, 3]) as tf.Tensor4D;
}

/**
 * The filter rotated by 180° with in/out channels swapped, [KH, KW, Co, Ci]. Reversing both
 * spatial axes reverses the flattened KH·KW tap index, so it is a row gather (the wasm Reverse
 * kernel is ~50× slower on these shapes).
 */
function flippedFilter(filter: tf.Tensor4D): tf.Tensor4D {
  if (hasKernel(FLIP_FILTER)) return runKernel(FLIP_FILTER, { filter })[0] as tf.Tensor4D;
  const [kh, kw, ci, co] = filter.shape;
  const taps = kh * kw;
  const reversed = tf.tensor1d(Array.from({ length: taps }, (_, i) => taps - 1 - i), 'int32');
  const rows = tf.gather(filter.reshape([taps, ci, co]), reversed);
  reversed.dispose();
  return rows.transpose([0, 2, 1]).reshape([kh, kw, co, ci]);
}

/** dL/dx of an NHWC conv, as a Conv2D of the dilated, padded dy with the flipped filter. */
export function conv2dInputGrad(
  xShape: [number, number, number, number],
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  info: tf.backend_util.Conv2DInfo,
): tf.Tensor4D {
  const [, h, w] = xShape;
  const [kh, kw] = filter.shape;
  const { top, left } = info.padInfo;
  const d = dilateSpatial(dy, info.strideHeight, info.strideWidth);
  const padTop = kh - 1 - top;
  const padLeft = kw - 1 - left;
  const padBottom = h - d.shape[1] - padTop + kh - 1;
  const padRight = w - d.shape[2] - padLeft + kw - 1;
  const flipped = flippedFilter(filter);
  if (Math.min(padTop, padBottom, padLeft, padRight) >= 0) {
    return tf.conv2d(d, flipped, 1, [[0, 0], [padTop, padBottom], [padLeft, padRight], [0, 0]]);
  }
  return tf.conv2d(padOrCrop(d, padTop, padBottom, padLeft, padRight), flipped, 1, 'valid');
}

let gradientsRegistered = false;
let wasmKernelsReplaced = false;
let fastKernelsOn = true;
/** tfjs's wasm kernels painter replaced, and the replacements. */
const replacedWasmKernels: { original: tf.KernelConfig; fast: tf.KernelConfig }[] = [];

/** Swaps a wasm kernel for a faster one; the original's setup still runs when a backend initialises. */
function replaceWasmKernel(name: string, make: (original: tf.KernelConfig) => tf.KernelFunc): void {
  const original = tf.getKernel(name, 'wasm');
  if (!original) return;
  const fast = { ...original, kernelFunc: make(original) };
  replacedWasmKernels.push({ original, fast });
  if (!fastKernelsOn) return;
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel(fast);
}

/**
 * Switches painter's speed kernels (the wasm BatchMatMul, Identity and Sum replacements and the
 * fused wasm/cpu kernels) on or off; off, tfjs's own kernels and plain tf ops run instead. The
 * correctness fixes (UnsortedSegmentSum, the Conv2D gradient) stay. For benchmarks that compare
 * both, and for ruling a fast kernel out when results look wrong.
 */
export function setFastKernels(on: boolean): void {
  fastKernelsOn = on;
  for (const { original, fast } of replacedWasmKernels) {
    tf.unregisterKernel(original.kernelName, 'wasm');
    tf.registerKernel(on ? fast : original);
  }
  setJsKernelsEnabled(on);
}

/** Registers painter's kernels and gradients; idempotent, called after each backend loads. */
export function registerPainterKernels(): void {
  if (tf.findBackendFactory('wasm') && !tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSumWasm as tf.KernelFunc });
  }
  if (tf.findBackendFactory('wasm') && !wasmKernelsReplaced) {
    wasmKernelsReplaced = true;
    replaceWasmKernel('BatchMatMul', makeWasmBatchMatMul);
    replaceWasmKernel('Identity', makeWasmIdentity);
    replaceWasmKernel('Sum', makeWasmSum);
  }
  if (tf.findBackendFactory('wasm') && !hasWasmKernel(WASM_CONV_FILTER_GRAD)) {
    tf.registerKernel({ kernelName: WASM_CONV_FILTER_GRAD, backendName: 'wasm', kernelFunc: conv2dFilterGradWasm as tf.KernelFunc });
  }
  registerFusedNorms();
  registerFusedAdamW();
  registerConvKernels();
  registerWebgpuKernels();
  if (gradientsRegistered) return;
  gradientsRegistered = true;
  const original = tf.getGradient('Conv2D');
  if (!original) throw new Error('tfjs registered no Conv2D gradient: import @tensorflow/tfjs before painter');
  tf.registerGradient({
    kernelName: 'Conv2D',
    inputsToSave: ['x', 'filter'],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter] = saved as [tf.Tensor4D, tf.Tensor4D];
      const a = attrs as unknown as {
        strides: [number, number] | number;
        pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
        dataFormat: 'NHWC' | 'NCHW';
        dilations: [number, number] | number;
        dimRoundingMode?: 'floor' | 'round' | 'ceil';
      };
      const dil = typeof a.dilations === 'number' ? [a.dilations, a.dilations] : a.dilations ?? [1, 1];
      const native = !(activeBackendSpec()?.fusedKernels ?? false) || a.dataFormat === 'NCHW' || dil[0] !== 1 || dil[1] !== 1;
      if (native) return original.gradFunc(dy, saved, attrs);
      const info = tf.backend_util.computeConv2DInfo(
        x.shape,
        filter.shape,
        a.strides,
        1,
        a.pad as 'valid',
        a.dimRoundingMode,
        false,
        'channelsLast',
      );
      const g = dy as tf.Tensor4D;
      return {
        x: () => conv2dInputGrad(x.shape, g, filter, info),
        filter: () => conv2dFilterGrad(x, g, filter.shape, info),
      };
    },
  });
}

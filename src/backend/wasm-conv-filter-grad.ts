/**
 * dL/dfilter of a stride-1 NHWC convolution on the wasm backend as XNNPACK GEMMs, instead of the
 * generic route (a Conv2D over batch ↔ channel transposed tensors, whose "image" has as many
 * channels as the batch, which XNNPACK runs at about half its forward-convolution speed).
 *
 * With x zero-padded to [N, Hp, Wp, Ci] and flattened over (n, y, x) to rows p, tap (a, b) of the
 * filter reads row p + a·Wp + b for the output position stored at row p. So, with
 *   Xᵀ [Ci, K]  the padded input, channel-major (K = N·Hp·Wp), and
 *   E  [K, Co]  dy scattered to the rows of its positions (zero elsewhere),
 * dW[a, b] = Xᵀ[:, s .. s+K) · E with s = a·Wp + b. Every row where E is non-zero has p + s < K,
 * so the shifted window never leaves Xᵀ's row where it matters (it may read the next channel's
 * first values, or the zero tail after the last channel, against E's zero rows). Two ways to run it, by size:
 *   - one GEMM [KH·KW·Ci, K] · [K, Co] on an im2col copy of the shifted rows (fastest when the
 *     copy is small), or
 *   - KH·KW GEMMs [Ci, K] · [K, Co] on views into Xᵀ (no copy; for large images).
 * Measured on tfjs-wasm 4.22, batch 2, 3×3 filters: 32×32 64→32 5.1 → 3.7 ms, 16×16 128→64
 * 5.0 → 3.7 ms, 64×64 32→32 11.4 → 6.5 ms.
 */
import type * as tf from '@tensorflow/tfjs';
import { gemm, type WasmBackend } from './wasm-gemm.js';

interface WasmHeapBackend extends WasmBackend {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

export const WASM_CONV_FILTER_GRAD = 'PainterConv2DFilterGrad';

/** Past this many floats the im2col copy is not made (the per-tap GEMMs need no copy). */
const IM2COL_MAX_FLOATS = 1 << 22;
/** From this many padded pixels per image, the per-tap GEMMs are faster than one on a copy. */
const VIEWS_FROM_PIXELS = 64 * 64;

export interface FilterGradAttrs {
  filterHeight: number;
  filterWidth: number;
  padTop: number;
  padLeft: number;
}

/** The kernel: inputs x [N, H, W, Ci] and dy [N, OH, OW, Co] (stride 1, dilation 1, pads ≥ 0). */
export function conv2dFilterGradWasm(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const backend = args.backend as WasmHeapBackend;
  const x = args.inputs['x']!;
  const dy = args.inputs['dy']!;
  const { filterHeight: kh, filterWidth: kw, padTop, padLeft } = args.attrs as unknown as FilterGradAttrs;
  const [n, h, w, ci] = x.shape as [number, number, number, number];
  const [, oh, ow, co] = dy.shape as [number, number, number, number];
  const hp = oh + kh - 1;
  const wp = ow + kw - 1;
  const plane = hp * wp;
  const K = n * plane;
  const taps = kh * kw;
  const im2col = plane < VIEWS_FROM_PIXELS && taps * ci * K <= IM2COL_MAX_FLOATS;

  // Allocate everything before taking heap views: growing the heap detaches older views.
  const out = backend.makeOutput([kh, kw, ci, co], 'float32');
  // Xᵀ with a zero tail, so that every shifted [Ci, K] window lies inside it.
  const tail = (kh - 1) * wp + (kw - 1);
  const xt = backend.makeOutput([ci * K + tail], 'float32');
  const e = backend.makeOutput([K, co], 'float32');
  const cols = im2col ? backend.makeOutput([taps * ci, K], 'float32') : undefined;
  try {
    const xs = backend.typedArrayFromHeap(x);
    const dys = backend.typedArrayFromHeap(dy);
    const xth = backend.typedArrayFromHeap(xt);
    const eh = backend.typedArrayFromHeap(e);
    // Xᵀ: the padded input, channel-major.
    xth.fill(0);
    for (let b = 0; b < n; b++) {
      for (let y = 0; y < h; y++) {
        const yp = y + padTop;
        if (yp >= hp) break;
        for (let c = 0; c < w; c++) {
          const xp = c + padLeft;
          if (xp >= wp) break;
          const src = ((b * h + y) * w + c) * ci;
          const p = b * plane + yp * wp + xp;
          for (let i = 0; i < ci; i++) xth[i * K + p] = xs[src + i]!;
        }
      }
    }
    // E: each output row of dy at the flat position of its top-left tap.
    eh.fill(0);
    for (let b = 0; b < n; b++) {
      for (let y = 0; y < oh; y++) {
        const src = (b * oh + y) * ow * co;
        eh.set(dys.subarray(src, src + ow * co), (b * plane + y * wp) * co);
      }
    }
    if (cols) {
      const ch = backend.typedArrayFromHeap(cols);
      for (let a = 0; a < kh; a++) {
        for (let c = 0; c < kw; c++) {
          const t = a * kw + c;
          const s = a * wp + c;
          for (let i = 0; i < ci; i++) ch.set(xth.subarray(i * K + s, (i + 1) * K + s), (t * ci + i) * K);
        }
      }
      gemm(backend, { t: cols }, { t: e }, { t: out }, taps * ci, K, co);
    } else {
      for (let a = 0; a < kh; a++) {
        for (let c = 0; c < kw; c++) {
          gemm(backend, { t: xt, offset: a * wp + c }, { t: e }, { t: out, offset: (a * kw + c) * ci * co }, ci, K, co);
        }
      }
    }
    return out;
  } finally {
    for (const t of [xt, e, cols]) if (t) backend.disposeData(t.dataId);
  }
}

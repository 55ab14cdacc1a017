/**
 * Small kernels for the Conv2D gradient on the wasm and cpu backends (see kernels.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { registerJsKernel, runKernel, type JsKernel } from './js-kernel.js';

export const FLIP_FILTER = 'PainterFlipFilter';

/**
 * The filter rotated by 180° with in/out channels swapped: out[kh, kw, co, ci] =
 * w[KH−1−kh, KW−1−kw, ci, co], the filter of the input gradient as a convolution. One pass;
 * Reverse + Transpose on wasm cost ~1 ms each on a 3×3×64×64 filter.
 */
const flipFilterKernel: JsKernel = {
  name: FLIP_FILTER,
  inputs: ['filter'],
  outputShapes: ([s]) => [[s![0]!, s![1]!, s![3]!, s![2]!]],
  compute([w], [out], [s]) {
    const [kh, kw, ci, co] = s as [number, number, number, number];
    const taps = kh * kw;
    for (let t = 0; t < taps; t++) {
      const src = t * ci * co;
      const dst = (taps - 1 - t) * co * ci;
      for (let i = 0; i < ci; i++) {
        for (let o = 0; o < co; o++) out![dst + o * ci + i] = w![src + i * co + o]!;
      }
    }
  },
};

let registered = false;

export function registerConvKernels(): void {
  registerJsKernel(flipFilterKernel);
  if (registered) return;
  registered = true;
  // The flip is its own inverse, so its gradient is the flip of dy.
  tf.registerGradient({
    kernelName: FLIP_FILTER,
    gradFunc: (dy) => ({ filter: () => runKernel(FLIP_FILTER, { filter: dy as tf.Tensor })[0]! }),
  });
}

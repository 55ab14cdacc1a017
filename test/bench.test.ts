/**
 * The benchmark library: FLOP counting from the config, statistics, and one smoke run of every
 * item on tiny-sd-a. No timing is asserted (benchmarks are not timed tests).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { unetForwardFlops, unetTrainingFlops } from '../src/bench/flops.js';
import { profileKernels } from '../src/bench/kernel-profile.js';
import { BENCH_ITEMS, runBench } from '../src/bench/run-bench.js';
import { summarize } from '../src/bench/stats.js';
import type { StableDiffusion } from '../src/core/model.js';
import { disposeModel } from '../src/core/model.js';
import { unetForward } from '../src/core/models/unet.js';
import { loadModel } from '../src/io/load-model.js';
import { TINY_SD_A, useBackend } from './helpers.js';

let model: StableDiffusion;

beforeAll(async () => {
  await useBackend('wasm');
  model = loadModel(TINY_SD_A);
});
afterAll(() => disposeModel(model));

/** FLOPs of the Conv2D and BatchMatMul kernels `fn` runs, counted from their shapes. */
function countKernelFlops(fn: () => void): number {
  let flops = 0;
  const wrapped = ['Conv2D', 'BatchMatMul'].map((name) => tf.getKernel(name, 'wasm')!);
  for (const k of wrapped) {
    tf.unregisterKernel(k.kernelName, 'wasm');
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        const out = k.kernelFunc(args) as tf.TensorInfo;
        const outSize = out.shape.reduce((a, b) => a * b, 1);
        if (k.kernelName === 'Conv2D') {
          const [kh, kw, ci] = args.inputs['filter']!.shape as number[];
          flops += 2 * outSize * kh! * kw! * ci!;
        } else {
          const a = args.inputs['a']!.shape;
          const inner = (args.attrs as { transposeA: boolean }).transposeA ? a[a.length - 2]! : a[a.length - 1]!;
          flops += 2 * outSize * inner;
        }
        return out;
      },
    });
  }
  try {
    fn();
  } finally {
    for (const k of wrapped) {
      tf.unregisterKernel(k.kernelName, 'wasm');
      tf.registerKernel(k);
    }
  }
  return flops;
}

describe('FLOP count from the config', () => {
  it('equals the convolution and matmul work of an actual UNet forward (batch 2, 32×32, 77 tokens)', () => {
    const counted = countKernelFlops(() =>
      tf.tidy(() => {
        const x = tf.zeros([2, 32, 32, 4]) as tf.Tensor4D;
        const ctx = tf.zeros([2, 77, model.unet.config.cross_attention_dim]) as tf.Tensor3D;
        unetForward(model.unet.params, model.unet.config, x, 10, ctx).dataSync();
      }),
    );
    const input = { batch: 2, height: 32, width: 32, contextLength: 77 };
    expect(unetForwardFlops(model.unet.config, input)).toBe(counted);
    expect(unetTrainingFlops(model.unet.config, input)).toBe(3 * counted);
  });

  it('handles odd latent sizes like the UNet (⌈h/2⌉ per level)', () => {
    const even = unetForwardFlops(model.unet.config, { batch: 1, height: 16, width: 16, contextLength: 77 });
    const odd = unetForwardFlops(model.unet.config, { batch: 1, height: 15, width: 15, contextLength: 77 });
    expect(odd).toBeLessThan(even);
    expect(odd).toBeGreaterThan(0.7 * even);
  });
});

describe('statistics', () => {
  it('median, quartiles and range', () => {
    const s = summarize([5, 1, 4, 2, 3]);
    expect(s).toEqual({ median: 3, min: 1, max: 5, p25: 2, p75: 4, runs: 5 });
    expect(summarize([1, 2]).median).toBe(1.5);
  });
});

describe('kernel profile', () => {
  it('attributes calls to kernels and restores the originals', async () => {
    const before = tf.getKernel('Add', 'wasm')!.kernelFunc;
    const prof = await profileKernels(() => tf.tidy(() => tf.add(tf.ones([3]), tf.ones([3])).dataSync()));
    expect(prof.find((k) => k.kernel === 'Add')?.calls).toBe(1);
    expect(tf.getKernel('Add', 'wasm')!.kernelFunc).toBe(before);
  });
});

describe('runBench on tiny-sd-a (one run of each item)', () => {
  it('reports every item, memory, tensor drift and throughput', async () => {
    const seen: string[] = [];
    const tensorsBefore = tf.memory().numTensors;
    const r = await runBench(model, { warmup: 0, runs: 1, driftSteps: 2, matmulSize: 64, profile: true, onProgress: (w) => seen.push(w) });
    expect(r.results.map((x) => x.item)).toEqual([...BENCH_ITEMS]);
    for (const x of r.results) {
      expect(x.timing.runs).toBe(1);
      expect(x.timing.median).toBeGreaterThan(0);
      expect(x.cpu.median).toBeGreaterThanOrEqual(0);
    }
    expect(r.memory.liveTensors?.drift).toBe(0);
    expect(r.memory.peakRss).toBeGreaterThan(0);
    expect(r.memory.wasmHeap).toBeGreaterThan(0);
    expect(r.throughput.trainingStepFlops).toBe(3 * r.throughput.unetForwardFlops);
    expect(r.throughput.trainingGflops).toBeGreaterThan(0);
    expect(r.throughput.matmulGflops).toBeGreaterThan(0);
    expect(r.profile?.some((k) => k.kernel === 'Conv2D')).toBe(true);
    expect(seen.length).toBeGreaterThanOrEqual(BENCH_ITEMS.length);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('runs only the requested items', async () => {
    const r = await runBench(model, { warmup: 0, runs: 1, driftSteps: 0, items: ['vae-decode', 'matmul'], matmulSize: 32 });
    expect(r.results.map((x) => x.item)).toEqual(['vae-decode', 'matmul']);
    expect(r.memory.liveTensors).toBeUndefined();
  });
});

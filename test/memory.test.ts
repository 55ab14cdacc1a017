/**
 * The memory budget: the estimator against the measured peak of the wasm heap on the reference
 * pipeline (generate and invert), the symbolic model runs against the real ones, weight sizes
 * from headers only, and the refusal of an SD-1.5-sized model on wasm before anything loads.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fitSuggestions } from '../src/core/memory/advice.js';
import { estimateMemory, type ModelDescription } from '../src/core/memory/estimate.js';
import { frozenWeights, traceClipText, traceUNet, traceVaeDecode } from '../src/core/memory/model-traces.js';
import { MemoryTrace } from '../src/core/memory/trace.js';
import { disposeModel } from '../src/core/model.js';
import { clipTextForward, clipTextParamShapes, parseClipTextConfig } from '../src/core/models/clip-text.js';
import { parseUNetConfig, unetForward, unetParamShapes } from '../src/core/models/unet.js';
import { parseVaeConfig, vaeDecode, vaeParamShapes } from '../src/core/models/vae.js';
import { initParams } from '../src/core/params.js';
import { setAttentionSliceBytes } from '../src/core/ops.js';
import { sampleImages } from '../src/core/pipeline/generate.js';
import { PainterError } from '../src/errors.js';
import { readSourceImage } from '../src/io/dataset.js';
import { loadModel } from '../src/io/load-model.js';
import { describeModelMemory, readModelWeights } from '../src/io/memory-budget.js';
import { checkMemoryBudget, formatMemoryReport, memoryReport, memorySettings, refusalMessage } from '../src/app/memory-check.js';
import { BACKENDS } from '../src/backend/table.js';
import { WASM_HEAP_MAX, parseNvidiaSmi } from '../src/backend/capacity.js';
import { train } from '../src/train/engine.js';
import { createInversion } from '../src/train/textual-inversion.js';
import { FIXTURES, ROOT, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';
import { writeSd15Folder } from './sd15.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-memory-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await useBackend('wasm');
});

// ---------------------------------------------------------------------------------------------
// Measuring the wasm heap
// ---------------------------------------------------------------------------------------------

interface WasmModule {
  _malloc(n: number): number;
  _free(p: number): void;
  HEAPU8: Uint8Array;
}

/**
 * Live bytes of the wasm heap. Tensor buffers are malloc'ed from JavaScript, so wrapping
 * `_malloc`/`_free` tracks them exactly (peak included); what the C++ side keeps on its own
 * (XNNPACK's packed weight copies) is found by filling the heap's free space in 16 KiB blocks
 * until it has to grow: used = heap size − free.
 */
function meterWasmHeap() {
  const wasm = (tf.backend() as unknown as { wasm: WasmModule }).wasm;
  // emscripten replaces each export on its first call: call them once before wrapping.
  wasm._free(wasm._malloc(8));
  const malloc = wasm._malloc.bind(wasm);
  const free = wasm._free.bind(wasm);
  const sizes = new Map<number, number>();
  let live = 0;
  let peak = 0;
  wasm._malloc = (n: number) => {
    const p = malloc(n);
    sizes.set(p >>> 0, n);
    live += n;
    peak = Math.max(peak, live);
    return p;
  };
  wasm._free = (p: number) => {
    const n = sizes.get(p >>> 0);
    if (n !== undefined) {
      live -= n;
      sizes.delete(p >>> 0);
    }
    free(p);
  };
  const heapUsed = (): number => {
    const block = 1 << 14;
    const size = wasm.HEAPU8.buffer.byteLength;
    const held: number[] = [];
    let freeBytes = 0;
    for (;;) {
      held.push(malloc(block));
      if (wasm.HEAPU8.buffer.byteLength !== size) break;
      freeBytes += block;
    }
    for (const p of held) free(p);
    return size - freeBytes;
  };
  const untracked = () => heapUsed() - live;
  const baseline = untracked();
  let overall = 0;
  return {
    /** Tensor bytes' peak since the last reset. */
    intervalPeak: () => peak,
    resetInterval(): void {
      peak = live;
    },
    /** Closes an interval: its tensor peak plus what the C++ side holds at its end. */
    mark(): void {
      overall = Math.max(overall, peak + Math.max(0, untracked() - baseline));
      peak = live;
    },
    get peak(): number {
      return overall;
    },
    get live(): number {
      return live;
    },
    stop(): void {
      wasm._malloc = malloc;
      wasm._free = free;
    },
  };
}

function ratio(estimate: number, measured: number): number {
  return estimate / measured;
}

// ---------------------------------------------------------------------------------------------
// The estimator against measured peaks
// ---------------------------------------------------------------------------------------------

/**
 * Runs `run` under the wasm heap meter (`mark` records the live bytes at a point) and expects
 * the estimate's peak within 25% of the measured one.
 */
async function expectPeakNear(estimate: { peak: number; peakPhase: string }, run: (mark: () => void) => Promise<void> | void): Promise<void> {
  const meter = meterWasmHeap();
  try {
    await run(() => meter.mark());
  } finally {
    meter.stop();
  }
  const r = ratio(estimate.peak, meter.peak);
  const what = `estimate ${estimate.peak} B (${estimate.peakPhase}) vs measured ${meter.peak} B`;
  expect(r, what).toBeGreaterThan(0.75);
  expect(r, what).toBeLessThan(1.25);
}

describe('estimate vs measured wasm heap on tiny-sd-a', () => {
  it.each([1, 2])('generate, batch %i: within 25% of the measured peak', async (batch) => {
    const model0 = describeModelMemory(TINY_SD_A);
    const settings = memorySettings({ command: 'generate', options: { batch, count: batch } }, model0);
    const estimate = estimateMemory(model0, settings, BACKENDS.wasm);
    await expectPeakNear(estimate, async (mark) => {
      const model = loadModel(TINY_SD_A);
      mark();
      try {
        const request = { prompt: 'a cat', negativePrompt: '', steps: 3, guidance: 7.5, scheduler: 'dpm++2m' as const, seed: 1, count: batch, batch, width: 64, height: 64, clipSkip: 0 };
        for await (const event of sampleImages(model, request)) {
          void event;
          mark();
        }
        mark();
      } finally {
        disposeModel(model);
      }
    });
  });

  it('invert: within 25% of the measured peak (VAE encode, training step, validation grid)', async () => {
    const photos = fs.readdirSync(path.join(FIXTURES, 'photos', 'cat')).map((f) => path.join(FIXTURES, 'photos', 'cat', f));
    const images = await Promise.all(photos.map((f) => readSourceImage(f, 64)));
    const model0 = describeModelMemory(TINY_SD_A);
    const settings = memorySettings({ command: 'invert', options: { resolution: 64, batch: 2, validationEvery: 1 }, images: images.length }, model0);
    const estimate = estimateMemory(model0, settings, BACKENDS.wasm);
    await expectPeakNear(estimate, async (mark) => {
      const model = loadModel(TINY_SD_A);
      mark();
      try {
        const setup = createInversion(model, images, { ...TINY_INVERT_SETTINGS, resolution: 64, batch: 2 });
        mark();
        try {
          const engine = { steps: 1, gradAccum: 1, lr: 5e-3, lrSchedule: 'constant' as const, warmupSteps: 0, weightDecay: 0.01, maxGradNorm: 1, checkpointEvery: 100, validationEvery: 1, seed: 1 };
          await train(setup.task, engine, path.join(tmp, 'invert-run'), {}, { onStep: () => mark() });
          mark();
        } finally {
          setup.dispose();
        }
      } finally {
        disposeModel(model);
      }
    });
  });
});

describe('symbolic model runs', () => {
  const unetJson = JSON.parse(fs.readFileSync(path.join(TINY_SD_A, 'unet', 'config.json'), 'utf8'));

  it('allocate what the real forward and training passes allocate (UNet, VAE decoder, text encoder)', () => {
    const unet = parseUNetConfig({ ...unetJson, block_out_channels: [32, 64, 64], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'] }, 'unet');
    const vae = parseVaeConfig(JSON.parse(fs.readFileSync(path.join(TINY_SD_A, 'vae', 'config.json'), 'utf8')), 'vae');
    const us = unetParamShapes(unet);
    const vs = vaeParamShapes(vae);
    const te = parseClipTextConfig({ ...JSON.parse(fs.readFileSync(path.join(TINY_SD_A, 'text_encoder', 'config.json'), 'utf8')), hidden_size: 64, intermediate_size: 256 }, 'te');
    const ts = clipTextParamShapes(te);
    const up = initParams(us, 1);
    const vp = initParams(vs, 2);
    const tp = initParams(ts, 3);
    type Case = [string, (t: MemoryTrace) => void, () => void, boolean];
    const x = () => tf.zeros([1, 16, 16, 4]) as tf.Tensor4D;
    /** A UNet training step differentiating the context only (Textual Inversion's case). */
    const contextStep = (name: string, checkpoint: boolean): Case => [
      name,
      (t) => {
        t.op([], [traceUNet(t, unet, us, frozenWeights(t, us), t.input([1, 16, 16, 4]), t.input([1, 77, 32], 'float32', true), { checkpoint })]);
        t.backward(0);
      },
      () => {
        const ctx = tf.variable(tf.zeros([1, 77, 32]), true, `memtest-ctx-${name}-${Date.now()}`);
        const sample = x();
        const opts = checkpoint ? { checkpoint: { weights: () => false } } : {};
        const g = tf.variableGrads(() => tf.mean(unetForward(up, unet, sample, 10, ctx as unknown as tf.Tensor3D, opts)) as tf.Scalar, [ctx]);
        tf.dispose([g.value, ...Object.values(g.grads), ctx, sample]);
      },
      true,
    ];
    /** A UNet training step with every weight trainable, attention sliced at `sliceBytes` if given. */
    const allWeightsStep = (name: string, checkpoint: boolean, sliceBytes?: number): Case => [
      name,
      (t) => {
        setAttentionSliceBytes(sliceBytes);
        const w = (k: string) => t.weight(us.get(k)!, true);
        t.op([], [traceUNet(t, unet, us, w, t.input([1, 16, 16, 4]), t.input([1, 77, 32]), { checkpoint })]);
        t.backward(0);
        setAttentionSliceBytes(undefined);
      },
      () => {
        setAttentionSliceBytes(sliceBytes);
        const vars = [...up].map(([k, v]) => tf.variable(v, true, `memtest-${name}-${k}-${Date.now()}`));
        const params = new Map([...up.keys()].map((k, i) => [k, vars[i] as tf.Tensor]));
        const sample = x();
        const ctx = tf.zeros([1, 77, 32]) as tf.Tensor3D;
        const opts = checkpoint ? { checkpoint: { weights: () => true } } : {};
        const g = tf.variableGrads(() => tf.mean(unetForward(params, unet, sample, 10, ctx, opts)) as tf.Scalar, vars);
        // The variables share the weights' buffers (disposing them leaves the weights).
        tf.dispose([g.value, ...Object.values(g.grads), sample, ctx, ...vars]);
        setAttentionSliceBytes(undefined);
      },
      true,
    ];
    const meter = meterWasmHeap();
    try {
      const cases: Case[] = [
        [
          'unet forward',
          (t) => void traceUNet(t, unet, us, frozenWeights(t, us), t.input([2, 24, 24, 4]), t.input([2, 77, 32])),
          () => tf.tidy(() => void unetForward(up, unet, tf.zeros([2, 24, 24, 4]) as tf.Tensor4D, 10, tf.zeros([2, 77, 32]) as tf.Tensor3D)),
          false,
        ],
        [
          'vae decode',
          (t) => void traceVaeDecode(t, vae, vs, frozenWeights(t, vs), t.input([1, 24, 24, 4])),
          () => tf.tidy(() => void vaeDecode(vp, vae, tf.zeros([1, 24, 24, 4]) as tf.Tensor4D)),
          false,
        ],
        contextStep('unet training step (gradient w.r.t. the context)', false),
        allWeightsStep('unet training step (every weight trainable)', false),
        contextStep('checkpointed unet training step (gradient w.r.t. the context)', true),
        allWeightsStep('checkpointed unet training step (every weight trainable)', true),
        allWeightsStep('checkpointed unet training step with sliced attention (every weight trainable)', true, 16 * 1024),
        [
          'text encoder',
          (t) => void traceClipText(t, te, frozenWeights(t, ts), { batch: 2, length: 77 }),
          () => tf.tidy(() => void clipTextForward(tp, te, tf.zeros([2, 77], 'int32') as tf.Tensor2D)),
          false,
        ],
      ];
      for (const [name, symbolic, real, taped] of cases) {
        const t = new MemoryTrace({ taped, fused: true });
        symbolic(t);
        const start = meter.live;
        meter.resetInterval();
        real();
        const measured = meter.intervalPeak() - start;
        const r = ratio(t.peak, measured);
        const what = `${name}: trace ${t.peak} B vs measured ${measured} B`;
        expect(r, what).toBeGreaterThan(0.9);
        expect(r, what).toBeLessThan(1.1);
      }
    } finally {
      meter.stop();
      tf.dispose([...up.values(), ...vp.values(), ...tp.values()]);
    }
  });
});

describe('an SD-1.5-sized model (headers only)', () => {
  const dir = path.join(tmp, 'sd15');
  beforeAll(() => writeSd15Folder(dir));
  const wasm = { name: 'wasm' as const, gpu: false };

  it('reads the weight sizes from the headers without the data', () => {
    const m = describeModelMemory(dir);
    // SD-1.5 parameter counts: UNet 859,520,964; text encoder 123,060,480; VAE 83,653,863.
    expect(m.weights.unet.bytes).toBe(859_520_964 * 4);
    expect(m.weights.textEncoder.bytes).toBe(123_060_480 * 4);
    expect(m.weights.vaeEncoder.bytes + m.weights.vaeDecoder.bytes).toBe(83_653_863 * 4);
    // XNNPACK copies: convs twice, matmul weights once, embeddings, norms and biases never.
    expect(m.weights.textEncoder.packedBytes).toBe(12 * (4 * 768 * 768 + 2 * 768 * 3072) * 4);
    expect(m.weights.unet.packedBytes).toBeGreaterThan(m.weights.unet.bytes);
  });

  it.each(['generate', 'invert', 'dreambooth'] as const)('%s is refused on wasm before loading, with one clear line', (command) => {
    const before = fs.readdirSync(dir, { recursive: true }).sort();
    let error: unknown;
    try {
      checkMemoryBudget({ command, options: {} }, dir, wasm);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PainterError);
    const message = (error as PainterError).message;
    expect((error as PainterError).exitCode).toBe(1);
    expect(message).not.toContain('\n');
    expect(message).toMatch(/^not enough memory: (generate|invert|dreambooth lora) needs about \d+(\.\d+)? GB at 512(×512)? px, batch 1 \(weights /);
    expect(message).toMatch(/, but only \d+(\.\d+)? GB can be used \(95% of .*: \d+(\.\d+)? GB\); (to fit, use |no setting painter offers)/);
    expect(message).toContain('Nothing was loaded or written');
    expect(fs.readdirSync(dir, { recursive: true }).sort()).toEqual(before);
  });

  it('PAINTER_MEMORY_CHECK=off skips the check', () => {
    process.env['PAINTER_MEMORY_CHECK'] = 'off';
    try {
      expect(checkMemoryBudget({ command: 'generate', options: {} }, dir, wasm)).toBeUndefined();
    } finally {
      delete process.env['PAINTER_MEMORY_CHECK'];
    }
  });

  it('suggests only changes that make it fit', () => {
    const m = describeModelMemory(dir);
    const gen = memorySettings({ command: 'generate', options: {} }, m);
    // Generation on wasm: even the UNet alone and XNNPACK's copies of it exceed the heap.
    const onWasm = fitSuggestions(m, gen, BACKENDS.wasm, WASM_HEAP_MAX, { backend: BACKENDS.tensorflow, capacity: 64e9, flags: '--backend tensorflow' });
    expect(onWasm.map((s) => s.flags)).toEqual(['--backend tensorflow']);
    const full = memorySettings({ command: 'dreambooth', options: { mode: 'full', validationEvery: 250 } }, m);
    const capacity = 40e9;
    const suggestions = fitSuggestions(m, full, BACKENDS.tensorflow, capacity);
    expect(suggestions.length).toBeGreaterThan(0);
    for (const s of suggestions) expect(s.peak).toBeLessThanOrEqual(capacity);
    const line = refusalMessage(estimateMemory(m, full, BACKENDS.tensorflow), false, { bytes: capacity, what: 'free system memory' }, suggestions.map((s) => s.flags));
    expect(line).toMatch(/^not enough memory: dreambooth full needs about \d+(\.\d+)? GB at 512 px, batch 1 \(weights 4\.2\d GB \+ optimizer state and cached latents .* GB \+ activations .*\), but only 38\.0 GB can be used \(95% of free system memory: 40\.0 GB\); to fit, use --/);
  });
});

describe('inputs of the estimate', () => {
  it('a single-file checkpoint weighs what its diffusers folder weighs', () => {
    const folder = readModelWeights(TINY_SD_A);
    const single = readModelWeights(path.join(FIXTURES, 'tiny-sd-a-single-file', 'tiny-sd-a.safetensors'));
    expect(single).toEqual(folder);
  });

  it('painter info lists every command at the default resolution', () => {
    const report = memoryReport(TINY_SD_A, { name: 'wasm', gpu: false })!;
    expect(report.resolution).toBe(64);
    expect(report.rows.map((r) => r.label)).toEqual(['generate', 'invert', 'dreambooth full', 'dreambooth lora']);
    for (const r of report.rows) expect(r.fits).toBe(true);
    const lines = formatMemoryReport(report);
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^memory {4}estimated peak on wasm at 64 px/);
    expect(lines[1]).toMatch(/^ {2}generate +\d+(\.\d+)? MB {2}fits \(peak: /);
  });

  it('the wasm heap cap is tfjs-backend-wasm\'s getHeapMax()', () => {
    const js = fs.readFileSync(path.join(ROOT, 'node_modules', '@tensorflow', 'tfjs-backend-wasm', 'wasm-out', 'tfjs-backend-wasm.js'), 'utf8');
    expect(js).toContain(`getHeapMax(){return ${WASM_HEAP_MAX}}`);
  });

  it('reads free GPU memory from nvidia-smi output', () => {
    const gpus = '0, 1024\n1, 30000\n';
    const apps = `${process.pid}, 500\n4242, 7000\n`;
    expect(parseNvidiaSmi(gpus, apps, process.pid, 0)).toBe((1024 + 500) * 2 ** 20);
    expect(parseNvidiaSmi(gpus, apps, process.pid, 1)).toBe((30000 + 500) * 2 ** 20);
    expect(parseNvidiaSmi(gpus, '', 1, 0)).toBe(1024 * 2 ** 20);
    expect(parseNvidiaSmi('garbage', '', 1, 0)).toBeUndefined();
  });
});

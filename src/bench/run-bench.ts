/**
 * `painter bench` as a library: times what training and generation spend their time in, on the
 * active backend, for a loaded model.
 *
 *   unet-train-step   UNet forward + backward + AdamW, every UNet weight trained (DreamBooth)
 *   ti-step           text encoder + frozen UNet, gradient and AdamW on the token embeddings only
 *   unet-forward      one UNet forward at batch 2 (one classifier-free-guided step)
 *   generate          prompt encoding, an N-step DDIM loop with guidance, VAE decode
 *   vae-encode/decode one image at the model's native size
 *   matmul            a large square matmul: what the backend can do at best
 *
 * Each item runs `warmup` times untimed, then `runs` times timed (median and spread). After the
 * timings, `driftSteps` more training steps check that the live-tensor count stays flat.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import { clipTextForward } from '../core/models/clip-text.js';
import { unetForward } from '../core/models/unet.js';
import { vaeDecode, vaeEncode, vaeLatentFactor } from '../core/models/vae.js';
import type { Params } from '../core/params.js';
import { rowParts, rowsShape } from '../core/row-chunks.js';
import { TOKEN_EMBEDDING_KEY } from '../core/embeddings.js';
import { decodeLatents, denoiseAll, encodePrompts, promptIdRows } from '../core/pipeline/text-to-image.js';
import { createScheduler, noiseSchedule } from '../core/schedulers/index.js';
import { modelPromptLength } from '../core/sizes.js';
import { AdamW } from '../backend/fused-adamw.js';
import { BACKENDS, type BackendName } from '../backend/table.js';
import { diffusionLoss } from '../core/training/loss.js';
import { unetForwardFlops, unetTrainingFlops } from './flops.js';
import { profileKernels, type KernelTime } from './kernel-profile.js';
import { BENCH_ITEMS, type BenchItem } from './items.js';
import { timeRuns, type TimingStats } from './stats.js';

export { BENCH_ITEMS, type BenchItem } from './items.js';

export interface BenchOptions {
  /** Untimed runs before timing each item. */
  warmup: number;
  /** Timed runs per item. */
  runs: number;
  /** Batch of the training steps and of the UNet forward. */
  batch: number;
  /** Latent height = width (default: the UNet's sample_size). */
  latentSize?: number;
  /** Denoising steps of `generate`. */
  steps: number;
  guidance: number;
  /** Training steps over which the live-tensor count must stay flat (0: skip). */
  driftSteps: number;
  /** Side of the square matmul. */
  matmulSize: number;
  /** Items to run (default: all). */
  items?: BenchItem[];
  /** Also profile one training step kernel by kernel. */
  profile?: boolean;
  /** Called before each item starts (progress reporting). */
  onProgress?: (what: string) => void;
}

export const DEFAULT_BENCH_OPTIONS: BenchOptions = {
  warmup: 2,
  runs: 10,
  batch: 2,
  steps: 10,
  guidance: 7.5,
  driftSteps: 20,
  matmulSize: 1024,
};

export interface BenchResult {
  item: BenchItem;
  /** What exactly was timed (shapes, steps). */
  detail: string;
  /** Wall-clock ms per run. */
  timing: TimingStats;
  /** CPU ms per run of this process (steadier than wall time on a shared machine). */
  cpu: TimingStats;
}

export interface BenchReport {
  backend: string;
  /** The threads the backend computes on, as `painter info` says them. */
  threads: string;
  tfjs: string;
  batch: number;
  latentSize: number;
  results: BenchResult[];
  /** Kernel profile of one UNet training step, slowest first (with `profile`). */
  profile?: KernelTime[];
  memory: {
    /** Peak resident set size of the process so far (bytes). */
    peakRss: number;
    /** Size of the WebAssembly heap (wasm backend only; it never shrinks). */
    wasmHeap?: number;
    /** Live tensors before and after `steps` more training steps; drift = after − before. */
    liveTensors?: { steps: number; before: number; after: number; drift: number };
  };
  throughput: {
    /** UNet forward FLOPs at the benchmark batch (counted from the config). */
    unetForwardFlops: number;
    trainingStepFlops: number;
    /** trainingStepFlops / median training-step time. */
    trainingGflops?: number;
    forwardGflops?: number;
    /** The backend's own large-matmul rate in the same run. */
    matmulGflops?: number;
  };
}

let benchVariableCount = 0;

function trainableCopy(p: Params, keys: Iterable<string>): { params: Params; vars: tf.Variable[] } {
  const params: Params = new Map(p);
  const vars: tf.Variable[] = [];
  for (const k of keys) {
    const v = tf.variable(p.get(k)!, true, `bench_${benchVariableCount++}_${k}`);
    params.set(k, v);
    vars.push(v);
  }
  return { params, vars };
}

/** Fixed inputs every item shares: latents, noise, text conditioning. */
interface Inputs {
  latents: tf.Tensor4D;
  noise: tf.Tensor4D;
  timesteps: number[];
  /** Token ids on the host (the text encoder reads no ids back from the device). */
  ids: number[][];
  context: tf.Tensor3D;
}

function makeInputs(model: StableDiffusion, batch: number, size: number): Inputs {
  const c = model.unet.config.in_channels;
  const prompts = Array.from({ length: batch }, (_, i) => (i % 2 === 0 ? 'a photo of a cat' : 'a painting of a cat in the forest'));
  const ids = promptIdRows(model, prompts);
  const train = model.scheduler.num_train_timesteps;
  return {
    latents: tf.randomNormal([batch, size, size, c], 0, 1, 'float32', 1) as tf.Tensor4D,
    noise: tf.randomNormal([batch, size, size, c], 0, 1, 'float32', 2) as tf.Tensor4D,
    timesteps: Array.from({ length: batch }, (_, i) => Math.floor(((i + 0.5) / batch) * train)),
    ids,
    context: encodePrompts(model, prompts),
  };
}

interface Step {
  run: () => Promise<void>;
  dispose: () => void;
}

/**
 * Computes `fn`'s result and waits for it with `await data()`, as painter reads results: on a GPU
 * backend a run ends when the device has finished, not when the work was queued.
 */
async function settle(fn: () => tf.Tensor): Promise<void> {
  const t = tf.tidy(fn);
  try {
    await t.data();
  } finally {
    t.dispose();
  }
}

function unetTrainStep(model: StableDiffusion, inputs: Inputs): Step {
  const { params, vars } = trainableCopy(model.unet.params, model.unet.params.keys());
  const schedule = noiseSchedule(model.scheduler);
  const opt = new AdamW({ lr: 1e-5, weightDecay: 1e-2 });
  const unet = { params, config: model.unet.config };
  return {
    run: () =>
      settle(() => {
        const { value, grads } = tf.variableGrads(
          () =>
            diffusionLoss(unet, schedule, { latents: inputs.latents, noise: inputs.noise, timesteps: inputs.timesteps, encoderHiddenStates: inputs.context }, {
              predictionType: model.scheduler.prediction_type,
            }),
          vars,
        );
        opt.applyGradients(vars, grads);
        return value;
      }),
    dispose: () => {
      opt.dispose();
      tf.dispose(vars);
    },
  };
}

function textualInversionStep(model: StableDiffusion, inputs: Inputs): Step {
  // As `painter invert` trains: one new embedding row (after the table), placed at the second
  // token of every prompt, the rest of the table frozen.
  const [rows, dim] = rowsShape(rowParts(model.textEncoder.params, TOKEN_EMBEDDING_KEY));
  const init = tf.randomNormal([1, dim], 0, 0.01, 'float32', 4);
  const row = tf.variable(init, true, `bench_${benchVariableCount++}_ti_row`);
  init.dispose();
  const ids = inputs.ids.map((r) => r.map((id, i) => (i === 1 ? rows : id)));
  const schedule = noiseSchedule(model.scheduler);
  const opt = new AdamW({ lr: 5e-4, weightDecay: 1e-2 });
  return {
    run: () =>
      settle(() => {
        const { value, grads } = tf.variableGrads(() => {
          const ehs = clipTextForward(model.textEncoder.params, model.textEncoder.config, ids, { extraTokens: { offset: rows, rows: row } }).lastHiddenState;
          return diffusionLoss(model.unet, schedule, { latents: inputs.latents, noise: inputs.noise, timesteps: inputs.timesteps, encoderHiddenStates: ehs }, {
            predictionType: model.scheduler.prediction_type,
          });
        }, [row]);
        opt.applyGradients([row], grads);
        return value;
      }),
    dispose: () => {
      opt.dispose();
      row.dispose();
    },
  };
}

function generate(model: StableDiffusion, size: number, steps: number, guidance: number): Promise<void> {
  return settle(() => {
    const prompt = encodePrompts(model, ['a photo of a cat']);
    const negative = encodePrompts(model, ['']);
    const scheduler = createScheduler('ddim', model.scheduler, steps);
    const init = tf.randomNormal([1, size, size, model.unet.config.in_channels], 0, 1, 'float32', 3) as tf.Tensor4D;
    const latents = denoiseAll(model, { scheduler, promptEmbeds: prompt, negativeEmbeds: negative, guidance, latents: init });
    scheduler.dispose();
    return decodeLatents(model, latents);
  });
}

function wasmHeapBytes(): number | undefined {
  if (tf.getBackend() !== 'wasm') return undefined;
  const b = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return b.wasm?.HEAPU8?.buffer.byteLength;
}

/** Runs the benchmark on the active backend. The model is left as it was. */
export async function runBench(model: StableDiffusion, options: Partial<BenchOptions> = {}): Promise<BenchReport> {
  const o: BenchOptions = { ...DEFAULT_BENCH_OPTIONS, ...options };
  const wanted = new Set<BenchItem>(o.items ?? BENCH_ITEMS);
  const size = o.latentSize ?? model.unet.config.sample_size ?? 64;
  const f = vaeLatentFactor(model.vae.config);
  const ctxLen = modelPromptLength(model);
  const progress = o.onProgress ?? (() => {});
  const results: BenchResult[] = [];
  const report: BenchReport = {
    backend: tf.getBackend(),
    threads: await BACKENDS[tf.getBackend() as BackendName].threads(),
    tfjs: tf.version_core,
    batch: o.batch,
    latentSize: size,
    results,
    memory: { peakRss: 0 },
    throughput: {
      unetForwardFlops: unetForwardFlops(model.unet.config, { batch: o.batch, height: size, width: size, contextLength: ctxLen }),
      trainingStepFlops: unetTrainingFlops(model.unet.config, { batch: o.batch, height: size, width: size, contextLength: ctxLen }),
    },
  };
  const time = async (item: BenchItem, detail: string, fn: () => Promise<void>): Promise<TimingStats | undefined> => {
    if (!wanted.has(item)) return undefined;
    progress(`${item}: ${detail}`);
    const { wall, cpu } = await timeRuns(fn, o.warmup, o.runs);
    results.push({ item, detail, timing: wall, cpu });
    return wall;
  };
  const latentShape = `${o.batch}×${size}×${size}×${model.unet.config.in_channels}`;
  const inputs = makeInputs(model, o.batch, size);
  try {
    if (wanted.has('unet-train-step') || o.driftSteps > 0 || o.profile) {
      const step = unetTrainStep(model, inputs);
      try {
        const t = await time('unet-train-step', `latents ${latentShape}, context ${ctxLen} tokens, AdamW on every UNet weight`, step.run);
        if (t) report.throughput.trainingGflops = report.throughput.trainingStepFlops / (t.median * 1e6);
        if (o.profile) {
          progress('profile: one UNet training step, kernel by kernel');
          await step.run();
          report.profile = await profileKernels(step.run);
        }
        if (o.driftSteps > 0) {
          progress(`live tensors over ${o.driftSteps} training steps`);
          await step.run();
          const before = tf.memory().numTensors;
          for (let i = 0; i < o.driftSteps; i++) await step.run();
          const after = tf.memory().numTensors;
          report.memory.liveTensors = { steps: o.driftSteps, before, after, drift: after - before };
        }
      } finally {
        step.dispose();
      }
    }
    if (wanted.has('ti-step')) {
      const step = textualInversionStep(model, inputs);
      try {
        await time('ti-step', `text encoder + frozen UNet, batch ${o.batch}, AdamW on the token embeddings`, step.run);
      } finally {
        step.dispose();
      }
    }
    const t = await time('unet-forward', `latents ${latentShape}`, () => settle(() => unetForward(model.unet.params, model.unet.config, inputs.latents, 500, inputs.context)));
    if (t) report.throughput.forwardGflops = report.throughput.unetForwardFlops / (t.median * 1e6);
    await time('generate', `DDIM ${o.steps} steps, guidance ${o.guidance}, 1 image ${size * f}×${size * f}, with prompt encoding and VAE decode`, () =>
      generate(model, size, o.steps, o.guidance),
    );
    const image = tf.randomUniform([1, size * f, size * f, model.vae.config.in_channels], -1, 1, 'float32', 4) as tf.Tensor4D;
    const latent = inputs.latents.slice([0, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D;
    try {
      await time('vae-encode', `1 image ${size * f}×${size * f}`, () => settle(() => vaeEncode(model.vae.params, model.vae.config, image).mean));
      await time('vae-decode', `1 latent ${size}×${size}`, () => settle(() => vaeDecode(model.vae.params, model.vae.config, latent)));
    } finally {
      tf.dispose([image, latent]);
    }
    const n = o.matmulSize;
    const a = tf.randomNormal([n, n], 0, 1, 'float32', 5);
    const b = tf.randomNormal([n, n], 0, 1, 'float32', 6);
    try {
      const m = await time('matmul', `[${n}, ${n}] × [${n}, ${n}]`, () => settle(() => tf.matMul(a, b)));
      if (m) report.throughput.matmulGflops = (2 * n * n * n) / (m.median * 1e6);
    } finally {
      tf.dispose([a, b]);
    }
  } finally {
    tf.dispose([inputs.latents, inputs.noise, inputs.context]);
  }
  report.memory.peakRss = process.resourceUsage().maxRSS * 1024;
  report.memory.wasmHeap = wasmHeapBytes();
  return report;
}

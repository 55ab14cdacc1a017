/**
 * The machinery painter-mini's pretraining stages share (pretrain.ts): seeded batch
 * streams rendered ahead of the step that needs them, fresh variables, component files, stage
 * "done" markers, the engine settings and resume point of a stage.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { PretrainHooks, PretrainSettings, PretrainStage, StageSummary } from './pretrain.js';
import { objectMask, renderScene } from './render.js';
import { caption, sampleScene } from './world.js';
import { PainterError, Rng, initParams, latestCheckpoint, readCheckpointMeta, train, trainWithReport, writeBytesAtomic, writeParams, type EngineConfig, type ParamShapes, type Params } from '../../src/index.js';

// ---------------------------------------------------------------------------------------------
// Data

export interface SceneBatch {
  images: Uint8Array[];
  captions: string[];
  /** Each object's body mask (`objectMask`), when the stream was asked for them. */
  masks?: Uint8Array[];
}

export const STAGE_SALT = { tokenizer: 0, vae: 1, ldm: 2, scale: 3 } as const;

/** A generator for (seed, stream, index): disjoint streams for seeds below 2^20. */
export function streamRng(seed: number, stream: number, index: number): Rng {
  return new Rng((seed * 4 + stream) * 2 ** 28 + index);
}

export interface BatchOptions {
  /** Also render each object's body mask. */
  withMasks?: boolean;
  /** `caption`'s `omit`: how often each of colour, pattern and background goes unnamed. */
  captionOmit?: number;
}

export async function renderBatch(rng: Rng, n: number, size: number, { withMasks = false, captionOmit = 0 }: BatchOptions = {}): Promise<SceneBatch> {
  const scenes = Array.from({ length: n }, () => sampleScene(rng));
  const captions = scenes.map((s) => caption(s, rng, captionOmit));
  const images = await Promise.all(scenes.map((s) => renderScene(s, size)));
  if (!withMasks) return { images, captions };
  return { images, captions, masks: await Promise.all(scenes.map((s) => objectMask(s, size))) };
}

/**
 * The diffusion loss's position weights for one scene, at latent resolution (`factor` pixels per
 * latent): 1 + `weight` on every latent pixel the object's body touches and on their 8
 * neighbours, so that the object's outline — what tells a cat from a house — weighs as much as
 * its inside; 1 elsewhere.
 */
export function objectWeightMap(mask: Uint8Array, size: number, factor: number, weight: number): Float32Array {
  const n = size / factor;
  const touched = new Uint8Array(n * n);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (mask[y * size + x]! > 0) touched[Math.floor(y / factor) * n + Math.floor(x / factor)] = 1;
  const out = new Float32Array(n * n).fill(1);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      let near = false;
      for (let yy = Math.max(0, y - 1); yy <= Math.min(n - 1, y + 1); yy++) for (let xx = Math.max(0, x - 1); xx <= Math.min(n - 1, x + 1); xx++) near ||= touched[yy * n + xx] === 1;
      if (near) out[y * n + x] = 1 + weight;
    }
  }
  return out;
}

/**
 * Batch `k` of a stage is rendered from streamRng(seed, stage, k): independent of when it is
 * asked for, so resuming reproduces the data. `request` starts rendering in the background.
 */
export class BatchStream {
  private readonly pending = new Map<number, Promise<SceneBatch>>();
  private readonly ready = new Map<number, SceneBatch>();

  constructor(
    private readonly seed: number,
    private readonly stream: number,
    private readonly batch: number,
    private readonly size: number,
    private readonly steps: number,
    private readonly options: BatchOptions & {
      /** Batch k is the stream's batch `first + k`. */
      first?: number;
    } = {},
  ) {}

  request(k: number): void {
    if (k >= this.steps || this.pending.has(k) || this.ready.has(k)) return;
    this.pending.set(k, renderBatch(streamRng(this.seed, this.stream, (this.options.first ?? 0) + k), this.batch, this.size, this.options));
  }

  async wait(k: number): Promise<void> {
    this.request(k);
    const p = this.pending.get(k);
    if (!p) return;
    this.ready.set(k, await p);
    this.pending.delete(k);
  }

  take(k: number): SceneBatch {
    const b = this.ready.get(k);
    if (!b) throw new Error(`pretrain: batch ${k} was not rendered before its step`);
    this.ready.delete(k);
    return b;
  }
}

/** Raw RGB images → NHWC float32 in [−1, 1] (the VAE's input range). */
export function imagesToArray(images: Uint8Array[], size: number): Float32Array {
  const per = size * size * 3;
  const out = new Float32Array(images.length * per);
  images.forEach((img, i) => {
    for (let j = 0; j < per; j++) out[i * per + j] = img[j]! / 127.5 - 1;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Weights

let created = 0;

/** A fresh name prefix for a stage's variables (tfjs variable names must be unique). */
export function variablePrefix(what: string): string {
  return `painter_mini_${++created}_${what}`;
}

/**
 * Fresh trainable weights. `scale` multiplies the initial values of matching keys, e.g. the CLIP
 * text encoder's embedding tables, which transformers initialises at N(0, 0.02²) (tokens) and
 * N(0, 0.01²) (positions) rather than initParams' N(0, 1).
 */
export function variables(shapes: ParamShapes, seed: number, prefix: string, scale: (key: string) => number = () => 1): Map<string, tf.Variable> {
  const init = initParams(shapes, seed);
  const vars = new Map<string, tf.Variable>();
  for (const [k, t] of init) {
    const f = scale(k);
    vars.set(k, f === 1 ? tf.variable(t, true, `${prefix}/${k}`) : tf.tidy(() => tf.variable(tf.mul(t, f), true, `${prefix}/${k}`)));
    t.dispose();
  }
  return vars;
}

/**
 * CLIPTextModel's initial scale of its embedding tables (transformers' CLIPTextEmbeddings init).
 * At N(0, 1) an Adam step of ~lr is a 10⁻⁴ change: after 300 steps the token embeddings had moved
 * 0.2% and the diffusion stage still ignored its captions.
 */
export function clipEmbeddingScale(key: string): number {
  if (key.endsWith('token_embedding.weight')) return 0.02;
  if (key.endsWith('position_embedding.weight')) return 0.01;
  return 1;
}

export function prefixed(vars: Map<string, tf.Variable>, prefix: string): Map<string, tf.Variable> {
  return new Map([...vars].map(([k, v]) => [`${prefix}/${k}`, v]));
}

export async function writeComponent(dir: string, config: object, file: string, params: Params): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await writeBytesAtomic(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  await writeParams(path.join(dir, file), params);
}

export interface DoneMarker extends StageSummary {
  scalingFactor?: number;
}

export const DONE_FILE = 'done.json';

export function readDone(stageDir: string): DoneMarker | undefined {
  const file = path.join(stageDir, DONE_FILE);
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as DoneMarker) : undefined;
}

export function summarise(losses: number[]): StageSummary {
  const tail = losses.slice(-Math.max(1, Math.floor(losses.length / 10)));
  return { steps: losses.length, firstLoss: losses[0] ?? NaN, finalLoss: tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length) };
}

/** Warmup is capped at a tenth of a stage, so short runs still reach the peak rate. */
export function effectiveWarmup(s: PretrainSettings, steps: number): number {
  return Math.min(s.warmupSteps, Math.floor(steps / 10));
}

export function engineConfig(s: PretrainSettings, steps: number, lr: number, weightDecay: number, stream: number): EngineConfig {
  return {
    steps,
    gradAccum: 1,
    lr,
    lrSchedule: 'cosine',
    warmupSteps: effectiveWarmup(s, steps),
    weightDecay,
    maxGradNorm: 1,
    checkpointEvery: s.checkpointEvery,
    validationEvery: 0,
    seed: s.seed * 4 + stream,
  };
}

/** The checkpoint to resume a stage from, or undefined to start it; refuses to overwrite a run. */
export function resumePoint(stageDir: string, resume: boolean): string | undefined {
  const last = latestCheckpoint(stageDir);
  if (last && !resume) throw new PainterError(`${stageDir}: a previous run is there; pass --resume to continue it, or remove the folder to start over`);
  return last?.dir;
}

/** Runs a stage's `train()` (with its report page, index.html), rendering batch k while step k−1 computes. */
export async function runStage(
  stage: PretrainStage,
  s: PretrainSettings,
  data: BatchStream,
  task: Parameters<typeof train>[0],
  cfg: EngineConfig,
  stageDir: string,
  hooks: PretrainHooks,
  nextStep: () => number,
): Promise<number[]> {
  const from = resumePoint(stageDir, s.resume);
  await data.wait(from ? readCheckpointMeta(from).step : 0);
  const result = await trainWithReport(task, cfg, stageDir, { stage, settings: s }, {
    onStep: (r) => hooks.onStep?.(stage, r),
    shouldStop: hooks.shouldStop,
    breathe: () => data.wait(nextStep()),
    info: hooks.log,
    resumeHint: 'run npm run pretrain:mini again with --resume',
  }, from);
  return result.losses;
}

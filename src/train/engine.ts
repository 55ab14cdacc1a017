/**
 * The training engine shared by Textual Inversion and DreamBooth: optimisation steps with
 * gradient accumulation, clipping, AdamW and a learning-rate schedule; one seeded generator
 * for every random choice; atomic resumable checkpoints (every N steps and on interrupt);
 * a NaN guard; a log, a loss curve and validation grids in the run folder.
 *
 * A method (what is trained and how a batch's loss is computed) plugs in as a TrainingTask.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Rng, type RngState } from '../core/random.js';
import {
  ADAMW_DEFAULTS,
  adamWStep,
  clipGradNorm,
  createAdamWState,
  disposeAdamWState,
  learningRate,
  type AdamWState,
  type LrSchedule,
} from '../core/training/optimizer.js';
import { InterruptedError, PainterError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { loadSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { throwIfDeviceError } from '../backend/webgpu-kernels.js';
import type { CaptionSettings } from './captions.js';
import { WeightEma } from './ema.js';
import { lossCurveSvg, type ValidationPoint } from './loss-curve.js';

export type { ValidationPoint } from './loss-curve.js';

export interface TrainingTask {
  /** Trainable weights by a stable name (saved in checkpoints under it). */
  vars: Map<string, tf.Variable>;
  /**
   * Draws this micro-batch's random choices from `rng` (outside the gradient tape) and returns
   * the loss closure to differentiate; `step` is the optimisation step it is for (0-based).
   */
  prepareBatch(rng: Rng, step: number): () => tf.Scalar;
  /** A variable's learning rate as a multiple of the run's (e.g. the text encoder's own); default 1. */
  lrScale?(key: string): number;
  /** Task state that must survive a resume (e.g. data order); JSON-serialisable. */
  saveState(): unknown;
  restoreState(state: unknown): void;
  /**
   * The loss on held-out images at fixed timesteps and noise (optional; validation-loss.ts),
   * computed every validation step and at the last step, logged as `val_loss`.
   */
  validationLoss?(): Promise<number>;
  /** Renders validation images for the current weights (optional); returns PNG bytes. */
  validate?(step: number): Promise<Buffer | undefined>;
  /**
   * Writes the final result(s) into the run folder; returns the main output path. `variant`
   * 'ema' writes the EMA weights (then in the variables) under the same name with `-ema` added.
   */
  saveResult(runDir: string, step: number, variant?: 'ema'): Promise<string>;
}

/** A result's file or folder name for a variant: `cat.safetensors` → `cat-ema.safetensors`, `model` → `model-ema`. */
export function variantName(name: string, variant?: 'ema'): string {
  if (!variant) return name;
  const ext = path.extname(name);
  return `${name.slice(0, name.length - ext.length)}-${variant}${ext}`;
}

/** Data, loss and validation settings every training method takes. */
export interface MethodSettings {
  /** Square training size in pixels. */
  resolution: number;
  centerCrop: boolean;
  flip: boolean;
  /** Images per micro-batch (per term, for DreamBooth). */
  batch: number;
  minSnrGamma: number;
  noiseOffset: number;
  /** Recompute the UNet's block activations in the backward pass instead of keeping them (default off). */
  gradientCheckpointing?: boolean;
  /**
   * Free what the training step does not use once it is cached — the VAE after encoding the
   * images; a frozen text encoder after encoding the prompts (DreamBooth) — when nothing later
   * needs it: no validation grids, and an output that is not a whole model (LoRA, embeddings).
   */
  releaseUnused?: boolean;
  seed: number;
  validationPrompt: string;
  /** Recorded in the output's metadata. */
  baseModelHash: string;
  /** Caption shuffling and dropout (default none). */
  captions?: CaptionSettings;
}

export interface EngineConfig {
  steps: number;
  gradAccum: number;
  lr: number;
  lrSchedule: LrSchedule;
  warmupSteps: number;
  weightDecay: number;
  maxGradNorm: number;
  checkpointEvery: number;
  /** Keep the newest N checkpoints, deleting older ones (0 keeps all). */
  keepCheckpoints?: number;
  validationEvery: number;
  seed: number;
  /** EMA of the trained weights with this decay (0 or absent: none); see ema.ts. */
  emaDecay?: number;
}

export interface StepReport {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  msPerStep: number;
}

export interface EngineHooks {
  onStep?(r: StepReport): void;
  /** Checked between steps: true stops with a checkpoint (Ctrl-C). */
  shouldStop?(): boolean;
  /** Lets the event loop run between steps (signals, spinner). */
  breathe?(): Promise<void>;
  info?(message: string): void;
  warn?(message: string): void;
  /** A sample grid or checkpoint was written (complete). */
  file?(kind: 'sample' | 'checkpoint', path: string, step: number): void;
  /** How the user continues an interrupted run (the caller knows its own command line). */
  resumeHint?: string;
}

export interface Checkpoint {
  dir: string;
  step: number;
}

interface CheckpointMeta {
  format: 'painter-checkpoint';
  version: 1;
  step: number;
  rng: RngState;
  adamStep: number;
  task: unknown;
  config: unknown;
  losses: number[];
  /** Validation losses logged so far (absent in checkpoints of runs without them). */
  valLosses?: ValidationPoint[];
}

const STEP_DIR = /^step-(\d{6,})$/;

export function checkpointsDir(runDir: string): string {
  return path.join(runDir, 'checkpoints');
}

/** The newest complete checkpoint of a run folder, if any. */
export function latestCheckpoint(runDir: string): Checkpoint | undefined {
  const dir = checkpointsDir(runDir);
  if (!fs.existsSync(dir)) return undefined;
  const steps = fs
    .readdirSync(dir)
    .map((d) => STEP_DIR.exec(d))
    .filter((m): m is RegExpExecArray => m !== null && fs.existsSync(path.join(dir, m[0], 'state.json')))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const last = steps.at(-1);
  return last === undefined ? undefined : { dir: path.join(dir, `step-${String(last).padStart(6, '0')}`), step: last };
}

/** Reads a checkpoint's metadata (step, config) without loading tensors. */
export function readCheckpointMeta(dir: string): CheckpointMeta {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file)) throw new PainterError(`--resume ${dir}: not a painter checkpoint (no state.json); give a checkpoints/step-NNNNNN folder or "latest"`);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointMeta;
  } catch (e) {
    throw new PainterError(`${file}: the checkpoint's state is damaged (${(e as Error).message.split('\n')[0]}); resume from an earlier checkpoints/step-NNNNNN folder`);
  }
  if (meta?.format !== 'painter-checkpoint' || !Number.isInteger(meta.step) || meta.step < 0) {
    throw new PainterError(`${file}: not a painter checkpoint, or a damaged one; resume from another checkpoints/step-NNNNNN folder`);
  }
  return meta;
}

/** The complete checkpoints of a run, by step. */
function checkpointSteps(runDir: string): { dir: string; step: number }[] {
  const dir = checkpointsDir(runDir);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((d) => ({ m: STEP_DIR.exec(d), d }))
    .filter(({ m, d }) => m !== null && fs.existsSync(path.join(dir, d, 'state.json')))
    .map(({ m, d }) => ({ dir: path.join(dir, d), step: Number(m![1]) }))
    .sort((a, b) => a.step - b.step);
}

/** Deletes all but the newest `keep` complete checkpoints of a run (0 keeps all), never `current`. */
export function pruneCheckpoints(runDir: string, keep: number, current?: string): void {
  if (keep <= 0) return;
  const all = checkpointSteps(runDir);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) if (c.dir !== current) fs.rmSync(c.dir, { recursive: true, force: true });
}

/**
 * A resume from step S of a run that went further: the later checkpoints belong to the branch
 * being abandoned. They move to checkpoints/abandoned-<time>/ (kept, but no longer "latest").
 */
function setAsideLaterCheckpoints(runDir: string, step: number): string | undefined {
  const later = checkpointSteps(runDir).filter((c) => c.step > step);
  if (later.length === 0) return undefined;
  const aside = path.join(checkpointsDir(runDir), `abandoned-${new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15)}`);
  fs.mkdirSync(aside, { recursive: true });
  for (const c of later) fs.renameSync(c.dir, path.join(aside, path.basename(c.dir)));
  return aside;
}

/**
 * train.log up to `step`: a run killed after logging steps it never checkpointed would otherwise
 * log them twice once resumed.
 */
function truncateLog(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const kept = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => {
      if (line.trim() === '') return false;
      try {
        return (JSON.parse(line) as { step?: number }).step! <= step;
      } catch {
        return false; // a line cut by a kill mid-write
      }
    });
  fs.writeFileSync(file, kept.map((l) => l + '\n').join(''));
}

async function hostOf(t: tf.Tensor): Promise<TensorToWrite> {
  return { dtype: 'F32', shape: t.shape, data: (await t.data()) as Float32Array };
}

async function saveCheckpoint(runDir: string, step: number, task: TrainingTask, adam: AdamWState, rng: Rng, config: unknown, losses: number[], valLosses: ValidationPoint[], ema?: WeightEma): Promise<string> {
  const final = path.join(checkpointsDir(runDir), `step-${String(step).padStart(6, '0')}`);
  const tmp = `${final}.partial-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, v] of task.vars) {
    tensors.set(`param/${k}`, await hostOf(v));
    tensors.set(`adam.m/${k}`, await hostOf(adam.m.get(k)!));
    tensors.set(`adam.v/${k}`, await hostOf(adam.v.get(k)!));
    if (ema) tensors.set(`ema/${k}`, await hostOf(ema.shadow.get(k)!));
  }
  await writeSafetensors(path.join(tmp, 'state.safetensors'), tensors, { format: 'painter-checkpoint' });
  const meta: CheckpointMeta = { format: 'painter-checkpoint', version: 1, step, rng: rng.state(), adamStep: adam.step, task: task.saveState(), config, losses, valLosses };
  // state.json last: a folder without it is incomplete and ignored by --resume latest.
  await writeBytesAtomic(path.join(tmp, 'state.json'), JSON.stringify(meta));
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  return final;
}

/**
 * The trained values in a checkpoint (tfjs layout), those of keys under `prefix/` with the prefix
 * removed (all when no prefix), e.g. to use a checkpoint of a run that is still going on.
 */
export function checkpointParams(dir: string, prefix?: string): Map<string, tf.Tensor> {
  const { tensors } = loadSafetensors(path.join(dir, 'state.safetensors'));
  const head = prefix === undefined ? 'param/' : `param/${prefix}/`;
  const out = new Map<string, tf.Tensor>();
  for (const [name, t] of tensors) {
    if (!name.startsWith(head) || t.dtype === 'I32' || t.dtype === 'I64') continue;
    out.set(name.slice(head.length), tf.tensor(t.data, t.shape));
  }
  return out;
}

function restoreCheckpoint(dir: string, task: TrainingTask, adam: AdamWState, ema?: WeightEma): CheckpointMeta {
  const meta = readCheckpointMeta(dir);
  const { tensors } = loadSafetensors(path.join(dir, 'state.safetensors'));
  for (const [k, v] of task.vars) {
    const get = (name: string) => {
      const t = tensors.get(name);
      if (!t || t.dtype === 'I32' || t.dtype === 'I64') throw new PainterError(`${dir}: checkpoint lacks "${name}"; it was written for another setup`);
      if (t.shape.join(',') !== v.shape.join(',')) throw new PainterError(`${dir}: "${name}" has shape [${t.shape}] but this run trains [${v.shape}]`);
      return tf.tensor(t.data, t.shape);
    };
    const p = get(`param/${k}`);
    v.assign(p);
    p.dispose();
    adam.m.get(k)!.dispose();
    adam.v.get(k)!.dispose();
    adam.m.set(k, tf.keep(get(`adam.m/${k}`)));
    adam.v.set(k, tf.keep(get(`adam.v/${k}`)));
    if (ema) {
      const e = get(`ema/${k}`);
      ema.shadow.get(k)!.assign(e);
      e.dispose();
    }
  }
  adam.step = meta.adamStep;
  task.restoreState(meta.task);
  return meta;
}

export interface TrainResult {
  step: number;
  output: string;
  /** The result with the EMA weights (with an EMA decay). */
  emaOutput?: string;
  /** Validation losses (with held-out images). */
  valLosses?: ValidationPoint[];
  losses: number[];
  checkpoint?: string;
}

/**
 * Runs (or resumes) training to `cfg.steps` optimisation steps. The run folder gets train.log,
 * loss.svg, samples/ and checkpoints/; the task writes its result at the end.
 */
export async function train(task: TrainingTask, cfg: EngineConfig, runDir: string, fullConfig: unknown, hooks: EngineHooks = {}, resumeFrom?: string): Promise<TrainResult> {
  fs.mkdirSync(runDir, { recursive: true });
  const adam = createAdamWState(task.vars);
  const ema = cfg.emaDecay ? new WeightEma(task.vars, cfg.emaDecay) : undefined;
  /** Runs fn with the weights validation and the EMA result use: the EMA's when on. */
  const withShownWeights = <T>(fn: () => Promise<T>): Promise<T> => (ema ? ema.swapIn(task.vars, fn) : fn());
  let rng = new Rng(cfg.seed);
  let step = 0;
  let losses: number[] = [];
  let valLosses: ValidationPoint[] = [];
  try {
    if (resumeFrom) {
      const meta = restoreCheckpoint(resumeFrom, task, adam, ema);
      rng = new Rng(meta.rng);
      step = meta.step;
      losses = meta.losses;
      valLosses = meta.valLosses ?? [];
      hooks.info?.(`resumed from ${resumeFrom} at step ${step}`);
    }
    /** A validation grid: a sample for the user to look at, so its failure (NaN, say) never stops training. */
    const writeSample = async (at: number): Promise<void> => {
      let png: Buffer | undefined;
      try {
        png = await withShownWeights(async () => task.validate?.(at));
      } catch (e) {
        if (!(e instanceof PainterError)) throw e;
        hooks.warn?.(`no validation samples at step ${at}: ${e.message}`);
        return;
      }
      if (!png) return;
      const file = path.join(runDir, 'samples', `step-${String(at).padStart(6, '0')}.png`);
      await writeBytesAtomic(file, png);
      hooks.file?.('sample', file, at);
    };
    const checkpoint = async (): Promise<string> => {
      const dir = await saveCheckpoint(runDir, step, task, adam, rng, fullConfig, losses, valLosses, ema);
      await writeBytesAtomic(path.join(runDir, 'loss.svg'), lossCurveSvg(losses, valLosses));
      pruneCheckpoints(runDir, cfg.keepCheckpoints ?? 0, dir);
      hooks.file?.('checkpoint', dir, step);
      return dir;
    };
    const logFile = path.join(runDir, 'train.log');
    if (resumeFrom) {
      truncateLog(logFile, step);
      const aside = setAsideLaterCheckpoints(runDir, step);
      if (aside) hooks.info?.(`checkpoints after step ${step} belong to the run's abandoned continuation: moved to ${aside}`);
    }
    const log = fs.openSync(logFile, 'a');
    let lastCheckpoint: string | undefined = resumeFrom;
    const adamCfg = { ...ADAMW_DEFAULTS, lr: cfg.lr, weightDecay: cfg.weightDecay };
    try {
      while (step < cfg.steps) {
        const t0 = performance.now();
        const lr = learningRate(cfg.lr, cfg.lrSchedule, step, cfg.steps, cfg.warmupSteps);
        // Gradient accumulation: the mean of the micro-batch gradients.
        const grads = new Map<string, tf.Tensor>();
        let lossSum = 0;
        for (let micro = 0; micro < cfg.gradAccum; micro++) {
          const lossFn = task.prepareBatch(rng, step);
          const { value, grads: g } = tf.variableGrads(lossFn, [...task.vars.values()]);
          try {
            lossSum += (await value.data())[0]!;
          } finally {
            value.dispose();
          }
          for (const [k, v] of task.vars) {
            const gk = g[v.name];
            if (!gk) continue;
            const scaled = tf.div(gk, cfg.gradAccum);
            gk.dispose();
            const prev = grads.get(k);
            grads.set(k, prev ? tf.add(prev, scaled) : scaled);
            if (prev) {
              prev.dispose();
              scaled.dispose();
            }
          }
        }
        const loss = lossSum / cfg.gradAccum;
        if (!Number.isFinite(loss)) {
          for (const g of grads.values()) g.dispose();
          const keep = lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint}` : 'no checkpoint was written yet';
          throw new PainterError(`the loss became ${loss} at step ${step + 1}; training stopped without applying that update (${keep}). Try a lower --lr or --max-grad-norm 1`);
        }
        const gradNorm = await clipGradNorm(grads, cfg.maxGradNorm);
        adamWStep(task.vars, grads, adam, adamCfg, lr, task.lrScale);
        for (const g of grads.values()) g.dispose();
        throwIfDeviceError();
        step += 1;
        ema?.update(task.vars, step);
        losses.push(loss);
        const ms = performance.now() - t0;
        const validating = task.validationLoss !== undefined && ((cfg.validationEvery > 0 && step % cfg.validationEvery === 0) || step === cfg.steps);
        const valLoss = validating ? await withShownWeights(() => task.validationLoss!()) : undefined;
        if (valLoss !== undefined) valLosses.push({ step, loss: valLoss });
        fs.writeSync(log, JSON.stringify({ step, loss, lr, gradNorm, ms: Math.round(ms), ...(valLoss !== undefined ? { val_loss: valLoss } : {}) }) + '\n');
        hooks.onStep?.({ step, steps: cfg.steps, loss, lr, gradNorm, msPerStep: ms });
        // Let signals and timers run, then see whether the user asked to stop (Ctrl-C).
        await hooks.breathe?.();
        const stopping = hooks.shouldStop?.() === true;
        if ((step % cfg.checkpointEvery === 0 && step < cfg.steps) || stopping) lastCheckpoint = await checkpoint();
        if (cfg.validationEvery > 0 && step % cfg.validationEvery === 0 && !stopping) await writeSample(step);
        if (stopping) {
          const hint = hooks.resumeHint ?? `resume from ${lastCheckpoint}`;
          throw new InterruptedError(`interrupted at step ${step}/${cfg.steps}; checkpoint saved in ${lastCheckpoint}; to continue, ${hint}`);
        }
      }
    } finally {
      fs.closeSync(log);
    }
    // The final state is a checkpoint too, so a finished run can be extended with more --steps.
    const finalCheckpoint = await checkpoint();
    const output = await task.saveResult(runDir, step);
    const emaOutput = ema ? await ema.swapIn(task.vars, () => task.saveResult(runDir, step, 'ema')) : undefined;
    if (cfg.validationEvery > 0 && step % cfg.validationEvery !== 0) await writeSample(step);
    return { step, output, ...(emaOutput ? { emaOutput } : {}), losses, ...(valLosses.length > 0 ? { valLosses } : {}), checkpoint: finalCheckpoint };
  } finally {
    disposeAdamWState(adam);
    ema?.dispose();
  }
}

/**
 * What every scheduler shares: the typed config (config.ts, re-exported here), the noise
 * schedule β_t / ᾱ_t, timestep spacing, and the `Scheduler` interface the denoising loop drives.
 *
 * Symbols: β_t = betas[t], α_t = 1 − β_t, ᾱ_t = alphas_cumprod[t] = ∏_{s≤t} α_s (DDPM, Ho et al. 2020).
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import type { PredictionType, SchedulerConfig, SchedulerKind } from './config.js';
import { cumprodF32, f32, npArange, npLinspace, roundHalfEven, sqrt32, torchLinspaceF32 } from './numerics.js';

export * from './config.js';

// ---------------------------------------------------------------------------------------------
// Noise schedule

/** β_t, α_t = 1 − β_t and ᾱ_t = ∏ α_s as float32, bit-identical to diffusers' torch tensors. */
export interface NoiseSchedule {
  readonly betas: Float32Array;
  readonly alphas: Float32Array;
  readonly alphasCumprod: Float32Array;
}

/** Glide's cosine schedule (Nichol & Dhariwal 2021, eq. 17): ᾱ(t) = cos²((t + s)/(1 + s)·π/2), s = 0.008, β capped at 0.999. */
function cosineBetas(n: number): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * Math.PI * 0.5) ** 2;
  const betas = new Float32Array(n);
  for (let i = 0; i < n; i++) betas[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999);
  return betas;
}

/**
 * Rescales β so the final ᾱ is exactly 0 (zero terminal SNR; Lin et al. 2023, Algorithm 1),
 * in float32 op by op as diffusers' rescale_zero_terminal_snr.
 */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const sqrtAbar = cumprodF32(betas.map((b) => f32(1 - b))).map(sqrt32);
  const first = sqrtAbar[0]!;
  const last = sqrtAbar[n - 1]!;
  const scale = f32(first / f32(first - last));
  const abar = sqrtAbar.map((v) => {
    const s = f32(f32(v - last) * scale);
    return f32(s * s);
  });
  const out = new Float32Array(n);
  out[0] = f32(1 - abar[0]!);
  for (let i = 1; i < n; i++) out[i] = f32(1 - f32(abar[i]! / abar[i - 1]!));
  return out;
}

export interface NoiseScheduleOptions {
  /**
   * With rescale_betas_zero_snr, ᾱ_T = 0 makes σ_T infinite; the σ-space samplers (Euler, DPM)
   * pin it at 2⁻²⁴ (the smallest fp16 subnormal), as diffusers does. DDPM/DDIM keep the 0.
   */
  finiteTerminalSigma?: boolean;
}

export function noiseSchedule(config: SchedulerConfig, opts: NoiseScheduleOptions = {}): NoiseSchedule {
  const n = config.num_train_timesteps;
  let betas: Float32Array;
  if (config.trained_betas) betas = Float32Array.from(config.trained_betas);
  else {
    switch (config.beta_schedule) {
      case 'linear':
        betas = torchLinspaceF32(config.beta_start, config.beta_end, n);
        break;
      case 'scaled_linear':
        // Latent diffusion's schedule: linear in √β.
        betas = torchLinspaceF32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), n).map((b) => f32(b * b));
        break;
      case 'squaredcos_cap_v2':
        betas = cosineBetas(n);
        break;
    }
  }
  if (config.rescale_betas_zero_snr) betas = rescaleZeroTerminalSnr(betas);
  const alphas = betas.map((b) => f32(1 - b));
  const alphasCumprod = cumprodF32(alphas);
  if (config.rescale_betas_zero_snr && opts.finiteTerminalSigma) alphasCumprod[n - 1] = 2 ** -24;
  return { betas, alphas, alphasCumprod };
}

/** σ_t = √((1−ᾱ_t)/ᾱ_t) for every training timestep, in float32 as diffusers computes it. */
export function trainingSigmas(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => sqrt32(f32(f32(1 - a) / a)));
}

/** timesteps[index], refusing an index outside the schedule. */
export function timestepAt(timesteps: readonly number[], index: number): number {
  const t = timesteps[index];
  if (!Number.isInteger(index) || t === undefined) throw new RangeError(`timestep index ${index} is outside the scheduler's ${timesteps.length} steps`);
  return t;
}

/**
 * Index of timestep t in the schedule for the first step: the second match when t repeats (so a
 * run started mid-schedule, as img2img does, does not skip a σ), else the first.
 */
export function indexForTimestep(timesteps: readonly number[], t: number): number | undefined {
  const matches = timesteps.flatMap((v, i) => (v === t ? [i] : []));
  return matches.length > 1 ? matches[1] : matches[0];
}

// ---------------------------------------------------------------------------------------------
// Timesteps

export function checkInferenceSteps(config: SchedulerConfig, numInferenceSteps: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > config.num_train_timesteps) {
    const max = config.num_train_timesteps;
    throw new PainterError(
      `the number of inference steps must be an integer from 1 to ${max} (the model's num_train_timesteps); got ${numInferenceSteps}`,
    );
  }
}

/**
 * `n` descending timesteps spaced over [0, end) by timestep_spacing (Lin et al. 2023, Table 2),
 * in float64 as numpy computes them: 'linspace' linspace(0, end−1, n) (fractional; each
 * scheduler rounds or casts it as its set_timesteps does), 'leading' k·⌊end/n⌋ + steps_offset
 * for k = n−1 … 0, 'trailing' round(arange(end, 0, −T/n)) − 1 with numpy's rounding (halves to
 * even). `end` is T = num_train_timesteps unless DPM-Solver's lambda_min_clipped cuts it short.
 */
export function timestepGrid(config: SchedulerConfig, n: number, end = config.num_train_timesteps): number[] {
  switch (config.timestep_spacing) {
    case 'linspace':
      return npLinspace(0, end - 1, n).reverse();
    case 'leading': {
      const ratio = Math.floor(end / n);
      return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + config.steps_offset);
    }
    case 'trailing':
      return npArange(end, 0, -config.num_train_timesteps / n).map((t) => roundHalfEven(t) - 1);
  }
}

/** Descending integer timesteps as DDPM/DDIM's set_timesteps spaces them: timestepGrid, rounded. */
export function spacedTimesteps(config: SchedulerConfig, numInferenceSteps: number): number[] {
  checkInferenceSteps(config, numInferenceSteps);
  return timestepGrid(config, numInferenceSteps).map(roundHalfEven);
}

/** ᾱ_t for an integer timestep, with a clear error for one outside the schedule. */
export function alphaCumprodAt(schedule: NoiseSchedule, t: number): number {
  const v = schedule.alphasCumprod[t];
  if (v === undefined || !Number.isInteger(t)) {
    throw new Error(`timestep ${t} is outside the noise schedule [0, ${schedule.alphasCumprod.length - 1}]`);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// The interface the denoising loop drives

export interface StepOutput {
  /** x_{t−1}, the sample for the next step; the caller owns it. */
  prevSample: tf.Tensor;
  /** x̂_0 predicted at this step, where the algorithm forms one; the caller owns it. */
  predOriginalSample?: tf.Tensor;
}

/**
 * One sampling algorithm over one set of timesteps. The math is elementwise on float32 tensors
 * of any layout (NHWC or NCHW) and runs on any backend. Returned tensors belong to the caller;
 * tensors a scheduler keeps across steps (multistep history) are its own, freed by dispose().
 */
export interface Scheduler {
  readonly kind: SchedulerKind;
  /** The effective config (class defaults applied). */
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** The timesteps to feed the model, in order (fractional for Euler ancestral). */
  readonly timesteps: readonly number[];
  /**
   * Timestep entries per sampling step (diffusers' `order`): 2 for samplers that evaluate the
   * model twice per step (Heun, DPM++ SDE); absent means 1.
   */
  readonly order?: number;
  /** Multiply the initial standard-normal latents by this. */
  readonly initNoiseSigma: number;
  /** True when step() must be given `noise` (a standard-normal tensor shaped like the sample). */
  readonly needsNoise: boolean;
  /** The model input for timestep t (a new tensor, also when the scheduler leaves it unscaled). */
  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor;
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput;
  /**
   * Clean latents x_0 noised to the level of timesteps[index], as diffusers' add_noise at that
   * timestep: image-to-image starts there, and blended edits re-noise the kept region to it.
   */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor;
  /**
   * The loop starts at timesteps[index] instead of the first (diffusers' set_begin_index, which
   * image-to-image calls with t_start): schedulers that count their steps start counting there.
   */
  setBeginIndex(index: number): void;
  /** Frees the tensors the scheduler holds across steps; it cannot step afterwards. */
  dispose(): void;
}

/** ε̂ from the model output at ᾱ_t: the output itself, (x_t − √ᾱ_t·x̂_0)/√(1−ᾱ_t), or √ᾱ_t·v + √(1−ᾱ_t)·x_t. */
export function predictEpsilon(predictionType: PredictionType, modelOutput: tf.Tensor, sample: tf.Tensor, sqrtAlphaProd: number, sqrtBetaProd: number): tf.Tensor {
  switch (predictionType) {
    case 'epsilon':
      return modelOutput;
    case 'sample':
      return tf.div(tf.sub(sample, tf.mul(modelOutput, sqrtAlphaProd)), sqrtBetaProd);
    case 'v_prediction':
      return tf.add(tf.mul(modelOutput, sqrtAlphaProd), tf.mul(sample, sqrtBetaProd));
  }
}

/**
 * x̂_0 from the model output at ᾱ_t (DDPM eq. 15 for ε; Salimans & Ho 2022 §4 for v):
 * ε: (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t;  sample: the output itself;  v: √ᾱ_t·x_t − √(1−ᾱ_t)·v.
 */
export function predictOriginalSample(
  predictionType: PredictionType,
  modelOutput: tf.Tensor,
  sample: tf.Tensor,
  sqrtAlphaProd: number,
  sqrtBetaProd: number,
): tf.Tensor {
  switch (predictionType) {
    case 'epsilon':
      return tf.div(tf.sub(sample, tf.mul(modelOutput, sqrtBetaProd)), sqrtAlphaProd);
    case 'sample':
      return tf.clone(modelOutput);
    case 'v_prediction':
      return tf.sub(tf.mul(sample, sqrtAlphaProd), tf.mul(modelOutput, sqrtBetaProd));
  }
}

/** The error for a config value a painter scheduler does not implement. */
export function unsupported(kind: SchedulerKind, what: string, fix: string): PainterError {
  return new PainterError(`scheduler config: ${what} is not supported by painter's ${kind} scheduler; ${fix} in scheduler_config.json`);
}

/** Requires `noise` for a stochastic step, shaped like the sample. */
export function requireNoise(kind: SchedulerKind, noise: tf.Tensor | undefined, sample: tf.Tensor): tf.Tensor {
  if (!noise) throw new Error(`${kind} step needs a noise tensor (needsNoise is true)`);
  if (noise.shape.join(',') !== sample.shape.join(',')) {
    throw new Error(`${kind} step: noise shape [${noise.shape}] differs from sample shape [${sample.shape}]`);
  }
  return noise;
}

/**
 * What every scheduler shares: the typed config (diffusers' scheduler_config.json fields), its
 * parsing with diffusers' `from_config` default rules, the noise schedule β_t / ᾱ_t, timestep
 * spacing, and the `Scheduler` interface the denoising loop drives.
 *
 * Symbols: β_t = betas[t], α_t = 1 − β_t, ᾱ_t = alphas_cumprod[t] = ∏_{s≤t} α_s (DDPM, Ho et al. 2020).
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import { configObject, FieldReader, type NumberRule, type Rule } from '../config-fields.js';
import { cumprodF32, f32, npArange, npLinspace, roundHalfEven, sqrt32, torchLinspaceF32 } from './numerics.js';

export type SchedulerKind = 'ddpm' | 'ddim' | 'pndm' | 'euler-a' | 'dpm++2m';
export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';
export type VarianceType = 'fixed_small' | 'fixed_small_log' | 'fixed_large' | 'fixed_large_log' | 'learned' | 'learned_range';
export type DpmAlgorithmType = 'dpmsolver++' | 'dpmsolver' | 'sde-dpmsolver++' | 'sde-dpmsolver';
export type DpmSolverType = 'midpoint' | 'heun';
export type FinalSigmasType = 'zero' | 'sigma_min';

/** diffusers' class for each kind (the `_class_name` of its scheduler_config.json). */
export const SCHEDULER_CLASS_NAMES: Readonly<Record<SchedulerKind, string>> = {
  ddpm: 'DDPMScheduler',
  ddim: 'DDIMScheduler',
  pndm: 'PNDMScheduler',
  'euler-a': 'EulerAncestralDiscreteScheduler',
  'dpm++2m': 'DPMSolverMultistepScheduler',
};

/**
 * The union of the scheduler_config.json fields the five schedulers read (names as diffusers
 * writes them). Each scheduler uses its own subset; the rest ride along unused, as in diffusers.
 */
export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
  /** DDPM, DDIM */
  clip_sample: boolean;
  clip_sample_range: number;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
  /** DDPM ('fixed_small' …) and DPM-Solver (null or 'learned…') */
  variance_type: VarianceType | null;
  /** DDIM, PNDM: ᾱ used after the last step (1 if true, else ᾱ_0) */
  set_alpha_to_one: boolean;
  /** PNDM */
  skip_prk_steps: boolean;
  /** DPM-Solver */
  solver_order: number;
  algorithm_type: DpmAlgorithmType;
  solver_type: DpmSolverType;
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_lu_lambdas: boolean;
  final_sigmas_type: FinalSigmasType;
  lambda_min_clipped: number;
  /** `_class_name` of the source file, if it had one. */
  _class_name: string | null;
  /**
   * Keys the source did not set (absent, or listed in its own `_use_default_values`): they take
   * the defaults of whichever scheduler class uses the config, as `Cls.from_config` does.
   */
  _use_default_values: SchedulerConfigKey[];
}

export type SchedulerConfigKey = Exclude<keyof SchedulerConfig, '_class_name' | '_use_default_values'>;
export type SchedulerValues = Omit<SchedulerConfig, '_class_name' | '_use_default_values'>;

/** `__init__` defaults shared by the five classes in diffusers 0.30.3 … */
const BASE_DEFAULTS: SchedulerValues = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  timestep_spacing: 'leading',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  clip_sample: true,
  clip_sample_range: 1.0,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  variance_type: 'fixed_small',
  set_alpha_to_one: true,
  skip_prk_steps: false,
  solver_order: 2,
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: 'zero',
  lambda_min_clipped: -Infinity,
};

/** … and where a class differs. */
const CLASS_DEFAULTS: Readonly<Record<SchedulerKind, Partial<SchedulerValues>>> = {
  ddpm: {},
  ddim: {},
  pndm: { set_alpha_to_one: false },
  'euler-a': { timestep_spacing: 'linspace' },
  'dpm++2m': { timestep_spacing: 'linspace', variance_type: null },
};

const CONFIG_KEYS = Object.keys(BASE_DEFAULTS) as SchedulerConfigKey[];

export function schedulerDefaults(kind: SchedulerKind): SchedulerValues {
  return { ...BASE_DEFAULTS, ...CLASS_DEFAULTS[kind] };
}

export function kindOfClassName(className: string | null): SchedulerKind | undefined {
  return (Object.keys(SCHEDULER_CLASS_NAMES) as SchedulerKind[]).find((k) => SCHEDULER_CLASS_NAMES[k] === className);
}

const BOOL: Rule = { type: 'boolean' };
const BETA: NumberRule = { type: 'number', min: 0, below: 1 };

/** What each field accepts (the values diffusers' five classes accept, or rewrite). */
const RULES: Readonly<Record<SchedulerConfigKey, Rule>> = {
  num_train_timesteps: { type: 'integer', min: 1, max: 100_000 },
  beta_start: BETA,
  beta_end: BETA,
  beta_schedule: { type: 'string', choices: ['linear', 'scaled_linear', 'squaredcos_cap_v2'] },
  trained_betas: { type: 'list', items: BETA, nonEmpty: true, nullable: true },
  prediction_type: { type: 'string', choices: ['epsilon', 'v_prediction', 'sample'] },
  timestep_spacing: { type: 'string', choices: ['leading', 'linspace', 'trailing'] },
  steps_offset: { type: 'integer', min: 0, max: 100_000 },
  rescale_betas_zero_snr: BOOL,
  clip_sample: BOOL,
  clip_sample_range: { type: 'number', above: 0 },
  thresholding: BOOL,
  dynamic_thresholding_ratio: { type: 'number' },
  sample_max_value: { type: 'number' },
  variance_type: {
    type: 'string',
    choices: ['fixed_small', 'fixed_small_log', 'fixed_large', 'fixed_large_log', 'learned', 'learned_range'],
    nullable: true,
  },
  set_alpha_to_one: BOOL,
  skip_prk_steps: BOOL,
  solver_order: { type: 'integer', min: 1, max: 3 },
  // 'deis' and the UniPC solver types are what diffusers itself rewrites (see below).
  algorithm_type: { type: 'string', choices: ['dpmsolver++', 'dpmsolver', 'sde-dpmsolver++', 'sde-dpmsolver', 'deis'] },
  solver_type: { type: 'string', choices: ['midpoint', 'heun', 'logrho', 'bh1', 'bh2'] },
  lower_order_final: BOOL,
  euler_at_final: BOOL,
  use_karras_sigmas: BOOL,
  use_lu_lambdas: BOOL,
  final_sigmas_type: { type: 'string', choices: ['zero', 'sigma_min'] },
  lambda_min_clipped: { type: 'number', infinite: true },
};

/**
 * Parses and validates a scheduler_config.json. Fields the file leaves out (or lists in its
 * `_use_default_values`) are recorded in `_use_default_values` and take the defaults of `kind`
 * (default: the kind of its `_class_name`, else DDPM's); `schedulerConfigFor` re-targets them
 * to another scheduler exactly as `OtherScheduler.from_config(config)` would. Unknown keys are
 * ignored, as diffusers ignores them. Every problem is reported at once, naming `source`.
 */
export function parseSchedulerConfig(json: unknown, source: string, kind?: SchedulerKind): SchedulerConfig {
  const r = new FieldReader(configObject(json, source, 'a diffusers scheduler_config.json'));
  const name = r.read('_class_name', { type: 'string' }, null);
  const useDefault = new Set<string>(r.read('_use_default_values', { type: 'list', items: { type: 'string' } }, []));
  const given: Partial<Record<SchedulerConfigKey, unknown>> = {};
  const defaulted: SchedulerConfigKey[] = [];
  for (const key of CONFIG_KEYS) {
    if (!r.has(key) || useDefault.has(key)) defaulted.push(key);
    else if (r.check(key, RULES[key])) given[key] = r.raw(key);
  }
  const nTrain = (given.num_train_timesteps as number | undefined) ?? BASE_DEFAULTS.num_train_timesteps;
  const trained = given.trained_betas as number[] | null | undefined;
  if (trained && trained.length !== nTrain) {
    r.problem(`"trained_betas" has ${trained.length} values but num_train_timesteps is ${nTrain}`);
  }
  r.throwIfProblems(`${source}: invalid scheduler config`);

  const config = { ...BASE_DEFAULTS, ...given, _class_name: name, _use_default_values: defaulted } as SchedulerConfig;
  // diffusers' own rewrites of legacy values (DPMSolverMultistepScheduler.__init__).
  if ((config.algorithm_type as string) === 'deis') config.algorithm_type = 'dpmsolver++';
  if (!['midpoint', 'heun'].includes(config.solver_type)) config.solver_type = 'midpoint';
  return schedulerConfigFor(config, kind ?? kindOfClassName(name) ?? 'ddpm');
}

/** The effective config scheduler `kind` sees: every defaulted key takes that class's default. */
export function schedulerConfigFor(config: SchedulerConfig, kind: SchedulerKind): SchedulerConfig {
  const defaults = schedulerDefaults(kind);
  const out: SchedulerConfig = { ...config, _use_default_values: [...config._use_default_values] };
  for (const key of config._use_default_values) (out as unknown as Record<string, unknown>)[key] = defaults[key];
  return out;
}

/**
 * Sets fields explicitly (e.g. from command-line flags): they stop following class defaults.
 * Assigning to a copied config instead would be undone by `schedulerConfigFor` for any key the
 * source file left out.
 */
export function overrideSchedulerConfig(config: SchedulerConfig, overrides: Partial<SchedulerValues>): SchedulerConfig {
  const keys = Object.keys(overrides) as SchedulerConfigKey[];
  const r = new FieldReader(overrides);
  for (const k of keys) {
    if (Object.hasOwn(RULES, k)) r.check(k, RULES[k]);
    else r.problem(`"${k}" is not a scheduler setting`);
  }
  r.throwIfProblems('scheduler settings');
  return {
    ...config,
    ...overrides,
    _use_default_values: config._use_default_values.filter((k) => !keys.includes(k)),
  };
}

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

/**
 * Index of timestep t in the schedule for the first step: the second match when t repeats (so a
 * run started mid-schedule, as img2img does, does not skip a σ), else the first.
 */
/** timesteps[index], refusing an index outside the schedule. */
export function timestepAt(timesteps: readonly number[], index: number): number {
  const t = timesteps[index];
  if (!Number.isInteger(index) || t === undefined) throw new RangeError(`timestep index ${index} is outside the scheduler's ${timesteps.length} steps`);
  return t;
}

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
 * Descending integer timesteps as DDPM/DDIM's set_timesteps spaces them (Lin et al. 2023,
 * Table 2): 'leading' k·⌊T/n⌋ + steps_offset, 'linspace' round(linspace(0, T−1, n)),
 * 'trailing' round(arange(T, 0, −T/n)) − 1. Rounding is numpy's (halves to even).
 */
export function spacedTimesteps(config: SchedulerConfig, numInferenceSteps: number): number[] {
  checkInferenceSteps(config, numInferenceSteps);
  const nTrain = config.num_train_timesteps;
  const n = numInferenceSteps;
  switch (config.timestep_spacing) {
    case 'linspace':
      return npLinspace(0, nTrain - 1, n).map(roundHalfEven).reverse();
    case 'leading': {
      const ratio = Math.floor(nTrain / n);
      return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + config.steps_offset);
    }
    case 'trailing':
      return npArange(nTrain, 0, -nTrain / n).map((t) => roundHalfEven(t) - 1);
  }
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

/**
 * x̂_0 from the model output at ᾱ_t (DDPM eq. 15 for ε; Salimans & Ho 2022 §4 for v):
 * ε: (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t;  sample: the output itself;  v: √ᾱ_t·x_t − √(1−ᾱ_t)·v.
 */
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

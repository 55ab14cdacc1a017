/**
 * The typed scheduler config (diffusers' scheduler_config.json fields) and its parsing with
 * diffusers' `from_config` default rules: keys a file leaves out take the defaults of whichever
 * scheduler class uses the config.
 */
import { configObject, FieldReader, type NumberRule, type Rule } from '../config-fields.js';

export type SchedulerKind = 'ddpm' | 'ddim' | 'pndm' | 'euler-a' | 'dpm++2m' | 'unipc' | 'lcm' | 'dpm++sde' | 'euler' | 'heun' | 'dpm++2m-sde';
export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';
export type VarianceType = 'fixed_small' | 'fixed_small_log' | 'fixed_large' | 'fixed_large_log' | 'learned' | 'learned_range';
export type DpmAlgorithmType = 'dpmsolver++' | 'dpmsolver' | 'sde-dpmsolver++' | 'sde-dpmsolver';
export type DpmSolverType = 'midpoint' | 'heun';
/** UniPC's B(h): bh1 = h, bh2 = e^h − 1 (Zhao et al. 2023, §3.3). */
export type UniPcSolverType = 'bh1' | 'bh2';
export type FinalSigmasType = 'zero' | 'sigma_min';
/** Euler: σ between the spaced timesteps interpolated linearly in t, or log-linearly over the whole range. */
export type InterpolationType = 'linear' | 'log_linear';
/** Euler: the model is fed the discrete timesteps, or 0.25·log σ (continuous, with v-prediction only). */
export type TimestepType = 'discrete' | 'continuous';

/** diffusers' class for each kind (the `_class_name` of its scheduler_config.json). */
export const SCHEDULER_CLASS_NAMES: Readonly<Record<SchedulerKind, string>> = {
  ddpm: 'DDPMScheduler',
  ddim: 'DDIMScheduler',
  pndm: 'PNDMScheduler',
  'euler-a': 'EulerAncestralDiscreteScheduler',
  'dpm++2m': 'DPMSolverMultistepScheduler',
  unipc: 'UniPCMultistepScheduler',
  lcm: 'LCMScheduler',
  'dpm++sde': 'DPMSolverSDEScheduler',
  euler: 'EulerDiscreteScheduler',
  heun: 'HeunDiscreteScheduler',
  // The same class as dpm++2m (listed after it, so that class name reads back as dpm++2m).
  'dpm++2m-sde': 'DPMSolverMultistepScheduler',
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
  /** DPM-Solver's midpoint/heun, UniPC's bh1/bh2 (each class rewrites the other's values). */
  solver_type: DpmSolverType | UniPcSolverType;
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_lu_lambdas: boolean;
  final_sigmas_type: FinalSigmasType;
  lambda_min_clipped: number;
  /** UniPC: integrate x̂_0 (true) or ε̂ (false) */
  predict_x0: boolean;
  /** UniPC: the steps whose corrector is skipped */
  disable_corrector: number[];
  /** UniPC: another scheduler as predictor (a Python object; only null is supported) */
  solver_p: string | null;
  /** LCM: the distillation schedule's step count */
  original_inference_steps: number;
  /** LCM: t is scaled by this in the consistency boundary conditions c_skip, c_out */
  timestep_scaling: number;
  /** DPM++ SDE: diffusers' Brownian tree seed (painter takes the noise as an input: ignored) */
  noise_sampler_seed: number | null;
  /** Euler */
  interpolation_type: InterpolationType;
  timestep_type: TimestepType;
  /** Euler: the range of Karras/exponential σ (null: the spaced timesteps' σ range) */
  sigma_min: number | null;
  sigma_max: number | null;
  /**
   * Euler, Heun, DPM-Solver (and painter's Euler a): σ evenly spaced in log σ (diffusers ≥ 0.31
   * has it; 0.30.3 does not, so its configs leave it out).
   */
  use_exponential_sigmas: boolean;
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
  predict_x0: true,
  disable_corrector: [],
  solver_p: null,
  original_inference_steps: 50,
  timestep_scaling: 10.0,
  noise_sampler_seed: null,
  interpolation_type: 'linear',
  timestep_type: 'discrete',
  sigma_min: null,
  sigma_max: null,
  use_exponential_sigmas: false,
};

/** … and where a class differs. */
const CLASS_DEFAULTS: Readonly<Record<SchedulerKind, Partial<SchedulerValues>>> = {
  ddpm: {},
  ddim: {},
  pndm: { set_alpha_to_one: false },
  'euler-a': { timestep_spacing: 'linspace' },
  'dpm++2m': { timestep_spacing: 'linspace', variance_type: null },
  unipc: { timestep_spacing: 'linspace', solver_type: 'bh2' },
  lcm: { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', clip_sample: false },
  'dpm++sde': { beta_start: 0.00085, beta_end: 0.012, timestep_spacing: 'linspace' },
  euler: { timestep_spacing: 'linspace' },
  heun: { beta_start: 0.00085, beta_end: 0.012, clip_sample: false, timestep_spacing: 'linspace' },
  // DPMSolverMultistepScheduler's, with AUTOMATIC1111's "DPM++ 2M SDE" algorithm.
  'dpm++2m-sde': { timestep_spacing: 'linspace', variance_type: null, algorithm_type: 'sde-dpmsolver++' },
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
  predict_x0: BOOL,
  disable_corrector: { type: 'list', items: { type: 'integer', min: 0 } },
  solver_p: { type: 'string', nullable: true },
  original_inference_steps: { type: 'integer', min: 1, max: 100_000 },
  timestep_scaling: { type: 'number', above: 0 },
  noise_sampler_seed: { type: 'integer', nullable: true },
  interpolation_type: { type: 'string', choices: ['linear', 'log_linear'] },
  timestep_type: { type: 'string', choices: ['discrete', 'continuous'] },
  sigma_min: { type: 'number', above: 0, nullable: true },
  sigma_max: { type: 'number', above: 0, nullable: true },
  use_exponential_sigmas: BOOL,
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
  // diffusers' own rewrite of a legacy value (DPMSolverMultistepScheduler.__init__).
  if ((config.algorithm_type as string) === 'deis') config.algorithm_type = 'dpmsolver++';
  return schedulerConfigFor(config, kind ?? kindOfClassName(name) ?? 'ddpm');
}

/**
 * The solver_type a class keeps: DPMSolverMultistepScheduler rewrites UniPC's bh1/bh2 (and
 * 'logrho') to 'midpoint', UniPCMultistepScheduler rewrites DPM's values to 'bh2', each in its
 * __init__; the other classes do not read the field.
 */
function solverTypeFor(kind: SchedulerKind, solverType: SchedulerConfig['solver_type']): SchedulerConfig['solver_type'] {
  if (SCHEDULER_CLASS_NAMES[kind] === 'DPMSolverMultistepScheduler') return solverType === 'heun' ? 'heun' : 'midpoint';
  if (kind === 'unipc') return solverType === 'bh1' ? 'bh1' : 'bh2';
  return solverType;
}

/** The effective config scheduler `kind` sees: every defaulted key takes that class's default. */
export function schedulerConfigFor(config: SchedulerConfig, kind: SchedulerKind): SchedulerConfig {
  const defaults = schedulerDefaults(kind);
  const out: SchedulerConfig = { ...config, _use_default_values: [...config._use_default_values] };
  for (const key of config._use_default_values) (out as unknown as Record<string, unknown>)[key] = defaults[key];
  out.solver_type = solverTypeFor(kind, out.solver_type);
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

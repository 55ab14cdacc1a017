/**
 * σ-space schedules shared by the samplers that step in σ (Euler, Euler a, Heun, DPM-Solver):
 * the float timesteps Euler/Heun space, σ(t) interpolated in the training table, the Karras and
 * exponential σ spacings, and σ → t back (diffusers' `_sigma_to_t`).
 *
 * Symbols: σ_t = √((1−ᾱ_t)/ᾱ_t) for the training timesteps t = 0 … T−1 (the "table"); a sample at
 * level σ is x = x_0 + σ·ε (Karras et al. 2022, "Elucidating the Design Space…", EDM).
 */
import { timestepGrid, unsupported, type SchedulerConfig, type SchedulerKind } from './common.js';
import { f32, npInterp, npLinspace, npLogF32, sqrt32, torchLinspaceF32 } from './numerics.js';

/** How the σ of the inference steps are spaced, instead of at the spaced timesteps. */
export type SigmaSpacing = 'karras' | 'exponential';

/** What a caller may ask for: the config's own spacing ('automatic'), or one of the spacings. */
export type SigmaScheduleChoice = 'automatic' | SigmaSpacing;
export const SIGMA_SCHEDULE_CHOICES: readonly SigmaScheduleChoice[] = ['automatic', 'karras', 'exponential'];

/** Karras's ρ: "ρ = 7 … a good compromise" (EDM §3, eq. 5). */
const KARRAS_RHO = 7;

/** The spacing `config` asks for (use_karras_sigmas / use_exponential_sigmas), undefined for none. */
export function sigmaSpacingOf(kind: SchedulerKind, config: SchedulerConfig): SigmaSpacing | undefined {
  if (config.use_karras_sigmas && config.use_exponential_sigmas) {
    throw unsupported(kind, 'use_karras_sigmas=true together with use_exponential_sigmas=true', 'set one of them to false');
  }
  if (config.use_karras_sigmas) return 'karras';
  return config.use_exponential_sigmas ? 'exponential' : undefined;
}

/**
 * Karras et al. 2022, eq. 5: σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, in
 * float64 as diffusers' `_convert_to_karras` (k-diffusion's get_sigmas_karras without the 0).
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const minInvRho = sigmaMin ** (1 / KARRAS_RHO);
  const maxInvRho = sigmaMax ** (1 / KARRAS_RHO);
  return npLinspace(0, 1, n).map((ramp) => (maxInvRho + ramp * (minInvRho - maxInvRho)) ** KARRAS_RHO);
}

/**
 * σ evenly spaced in log σ from σ_max down to σ_min (k-diffusion's get_sigmas_exponential
 * without the 0), in float64 as diffusers' `_convert_to_exponential` (diffusers ≥ 0.31).
 */
export function exponentialSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  return npLinspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp);
}

/** log σ_t of the training table, float32 as numpy's np.log of the float32 table computes it. */
export function logSigmaTable(table: Float32Array): Float32Array {
  return table.map(npLogF32);
}

/**
 * diffusers' `_sigma_to_t`: the fractional training timestep of level σ, interpolating linearly
 * in log σ between the two table entries around it (clamped to [0, T−1]). The arithmetic is
 * numpy 1.24's, as in the reference: a float64 scalar meeting the float32 table is computed in
 * float32, and only the final (1−w)·low + w·high in float64.
 */
export function sigmaToT(sigma: number, logTable: Float32Array): number {
  const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
  const n = logTable.length;
  // The last table entry at or below log σ (argmax of the cumulative count; 0 when none is).
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigma >= logTable[i]!) low = i;
  low = Math.min(low, n - 2);
  const lo = logTable[low]!;
  const hi = logTable[low + 1]!;
  const w = Math.min(Math.max(f32(f32(lo - logSigma) / f32(lo - hi)), 0), 1);
  return f32(1 - w) * low + w * (low + 1);
}

/** σ(t) for each timestep, linearly interpolated in the training table (np.interp, float64). */
export function interpolateSigmas(timesteps: readonly number[], table: Float32Array): number[] {
  const grid = Array.from({ length: table.length }, (_, i) => i);
  return timesteps.map((t) => npInterp(t, grid, table));
}

/**
 * `n` σ of `spacing` from σ_max down to σ_min, and the fractional timesteps (float64) that map
 * back to them; the model is fed those timesteps.
 */
export function spacedSigmas(
  spacing: SigmaSpacing,
  sigmaMin: number,
  sigmaMax: number,
  n: number,
  logTable: Float32Array,
): { sigmas: number[]; timesteps: number[] } {
  const sigmas = spacing === 'karras' ? karrasSigmas(sigmaMin, sigmaMax, n) : exponentialSigmas(sigmaMin, sigmaMax, n);
  return { sigmas, timesteps: sigmas.map((s) => sigmaToT(s, logTable)) };
}

/**
 * Descending float32 timesteps as Euler's and Heun's set_timesteps space them: timestepGrid cast
 * to float32 (fractional for 'linspace').
 */
export function floatTimesteps(config: SchedulerConfig, n: number): number[] {
  return timestepGrid(config, n).map(f32);
}

export interface DiscreteSigmaOptions {
  /** The spacing that replaces σ(t) (from sigmaSpacingOf, or the caller's choice). */
  spacing?: SigmaSpacing;
  /**
   * Euler's interpolation_type 'log_linear': n + 1 σ evenly spaced in log σ over the whole
   * training range (torch float32), while the timesteps stay the spaced ones, as diffusers has it.
   */
  logLinear?: boolean;
  /** Euler's config sigma_min / sigma_max: the spacing's range instead of the spaced σ's ends. */
  sigmaMin?: number | null;
  sigmaMax?: number | null;
  /** The σ appended after the last step's (0, or σ_0 for final_sigmas_type 'sigma_min'). */
  finalSigma?: number;
}

/**
 * Timesteps and σ (then the final σ) as Euler-family set_timesteps builds them: the spaced
 * float timesteps and their interpolated σ, or a Karras/exponential spacing over the range of
 * those σ and the fractional timesteps that map back to it (diffusers keeps them float32).
 */
export function discreteSigmaSteps(
  config: SchedulerConfig,
  table: Float32Array,
  n: number,
  opts: DiscreteSigmaOptions = {},
): { timesteps: number[]; sigmas: Float32Array } {
  let timesteps = floatTimesteps(config, n);
  let sigmas: ArrayLike<number> = opts.logLinear
    ? torchLinspaceF32(npLogF32(table[table.length - 1]!), npLogF32(table[0]!), n + 1).map(Math.exp)
    : interpolateSigmas(timesteps, table);
  if (opts.spacing) {
    const sigmaMin = opts.sigmaMin ?? sigmas[sigmas.length - 1]!;
    const sigmaMax = opts.sigmaMax ?? sigmas[0]!;
    const spaced = spacedSigmas(opts.spacing, sigmaMin, sigmaMax, n, logSigmaTable(table));
    sigmas = spaced.sigmas;
    timesteps = spaced.timesteps.map(f32);
  }
  return { timesteps, sigmas: Float32Array.from([...Array.from(sigmas), opts.finalSigma ?? 0]) };
}

/**
 * init_noise_sigma of a σ-space sampler: the largest σ (x_T = σ_max·z), or √(σ_max² + 1) for
 * 'leading' spacing, in float32 as diffusers computes it.
 */
export function initNoiseSigmaOf(config: SchedulerConfig, sigmas: Float32Array): number {
  const max = sigmas.reduce((m, s) => Math.max(m, s), 0);
  return config.timestep_spacing === 'leading' ? sqrt32(f32(f32(max * max) + 1)) : max;
}

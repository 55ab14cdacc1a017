/**
 * What the multistep solvers (DPM-Solver, UniPC) share: their timesteps and σ, the noise level
 * of a σ in the variance-preserving form, the model output converted to what they integrate, and
 * the history of those outputs they extrapolate from.
 *
 * Symbols as in DPM-Solver (Lu et al. 2022): α_t = 1/√(σ²+1), σ_t = σ·α_t, λ_t = log α_t − log σ_t
 * (half log-SNR); x_t = α_t·x_0 + σ_t·ε.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
  predictEpsilon,
  predictOriginalSample,
  timestepAt,
  timestepGrid,
  trainingSigmas,
  type NoiseSchedule,
  type PredictionType,
  type SchedulerConfig,
  type SchedulerKind,
} from './common.js';
import { f32, roundHalfEven, sqrt32 } from './numerics.js';
import { interpolateSigmas, logSigmaTable, spacedSigmas, type SigmaSpacing } from './sigma-schedules.js';

export interface AlphaSigma {
  alpha: number;
  sigma: number;
  lambda: number;
}

/** α_t, σ_t and λ_t of a noise level σ, in float32 op by op. */
export function alphaSigma(sigma: number): AlphaSigma {
  const alpha = f32(1 / sqrt32(f32(f32(sigma * sigma) + 1)));
  const s = f32(sigma * alpha);
  return { alpha, sigma: s, lambda: f32(f32(Math.log(alpha)) - f32(Math.log(s))) };
}

/**
 * The multistep solvers' timesteps over [0, end): for 'linspace' and 'leading' the n + 1 points
 * of timestepGrid without the last (round(linspace(0, end−1, n+1)) without the final 0;
 * k·⌊end/(n+1)⌋ + steps_offset for k = n … 1), for 'trailing' its n points; descending integers.
 */
export function multistepTimesteps(config: SchedulerConfig, numInferenceSteps: number, end = config.num_train_timesteps): number[] {
  checkInferenceSteps(config, numInferenceSteps);
  const n = numInferenceSteps;
  const grid = config.timestep_spacing === 'trailing' ? timestepGrid(config, n, end) : timestepGrid(config, n + 1, end).slice(0, -1);
  return grid.map(roundHalfEven);
}

/**
 * The timesteps over [0, end) and their σ interpolated in the training table, then the final σ
 * (0, or σ_min for final_sigmas_type 'sigma_min'). With a Karras/exponential `spacing` the σ span
 * the whole training range (lambda_min_clipped plays no part), at integer timesteps: rounded for
 * Karras, as 0.30.3 does; truncated for exponential, as diffusers ≥ 0.31 casts them.
 */
export function multistepSigmaSteps(
  config: SchedulerConfig,
  schedule: NoiseSchedule,
  numInferenceSteps: number,
  spacing: SigmaSpacing | undefined,
  end = config.num_train_timesteps,
): { timesteps: number[]; sigmas: Float32Array } {
  const table = trainingSigmas(schedule.alphasCumprod);
  let timesteps = multistepTimesteps(config, numInferenceSteps, end);
  let sigmas = interpolateSigmas(timesteps, table);
  if (spacing) {
    const spaced = spacedSigmas(spacing, table[0]!, table[table.length - 1]!, numInferenceSteps, logSigmaTable(table));
    sigmas = spaced.sigmas;
    timesteps = spaced.timesteps.map(spacing === 'karras' ? roundHalfEven : Math.trunc);
  }
  const sigmaLast = config.final_sigmas_type === 'zero' ? 0 : table[0]!;
  return { timesteps, sigmas: Float32Array.from([...sigmas, sigmaLast]) };
}

/**
 * The model output at level σ as the solver integrates it, a new tensor: the data prediction x̂_0
 * (DPM-Solver++, UniPC's predict_x0) or the noise prediction ε̂.
 */
export function convertModelOutput(
  predictionType: PredictionType,
  dataPrediction: boolean,
  modelOutput: tf.Tensor,
  sample: tf.Tensor,
  sigma: number,
): tf.Tensor {
  const { alpha, sigma: s } = alphaSigma(sigma);
  if (dataPrediction) return predictOriginalSample(predictionType, modelOutput, sample, alpha, s);
  // predictEpsilon hands an ε-model's output back as is; the history keeps its own tensor.
  return predictionType === 'epsilon' ? tf.clone(modelOutput) : predictEpsilon(predictionType, modelOutput, sample, alpha, s);
}

/** α_t·x_0 + σ_t·ε at σ = sigmas[index], the level of timesteps[index] (image-to-image's start). */
export function multistepAddNoise(timesteps: readonly number[], sigmas: Float32Array, original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
  timestepAt(timesteps, index);
  const { alpha, sigma } = alphaSigma(sigmas[index]!);
  return tf.tidy(() => tf.add(tf.mul(original, alpha), tf.mul(noise, sigma)));
}

/**
 * The converted outputs of the last `size` (solver_order) steps, newest last. They outlive the
 * tidy the caller runs step() in, until dispose(); a disposed solver cannot step again.
 */
export class OutputHistory {
  private outputs: tf.Tensor[] = [];
  private disposed = false;

  constructor(
    private readonly kind: SchedulerKind,
    private readonly size: number,
  ) {}

  throwIfDisposed(): void {
    if (this.disposed) throw new Error(`${this.kind}: step() after dispose()`);
  }

  /** Keeps `output` as the newest, freeing the oldest beyond `size`. */
  push(output: tf.Tensor): void {
    this.outputs.push(tf.keep(output));
    while (this.outputs.length > this.size) this.outputs.shift()!.dispose();
  }

  /** The output `k` steps back: 0 is the newest (m0), 1 the one before (m1), … */
  back(k: number): tf.Tensor | undefined {
    return this.outputs[this.outputs.length - 1 - k];
  }

  dispose(): void {
    for (const m of this.outputs) m.dispose();
    this.outputs = [];
    this.disposed = true;
  }
}

/**
 * Latent Consistency Model sampling (Luo et al. 2023, "Latent Consistency Models", Algorithm 1
 * "Multistep Latent Consistency Sampling"), diffusers' LCMScheduler, for LCM-distilled models
 * (and LCM-LoRA). Each step maps x_t to the consistency function's x̂_0 (eq. 9's boundary-
 * conditioned f_θ) and, except at the last step, noises it forward to the next timestep with a
 * fresh draw (an explicit input here). Keeps no state but the step count.
 *
 * As in diffusers 0.30.3, the schedule depends only on original_inference_steps (the
 * distillation's DDIM schedule); timestep_spacing, steps_offset and set_alpha_to_one are read
 * from the config but do not change it.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import {
  alphaCumprodAt,
  checkInferenceSteps,
  noiseSchedule,
  predictOriginalSample,
  requireNoise,
  schedulerConfigFor,
  timestepAt,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { addNoise } from './ddpm.js';
import { f32, sqrt32 } from './numerics.js';
import { StepIndex } from './step-index.js';

/** σ_data of the consistency boundary conditions (LCM §3.2, from Song et al. 2023's CM). */
const SIGMA_DATA = 0.5;

/**
 * LCM's inference timesteps: the distillation schedule τ_k = k·⌊T/N⌋ − 1 (k = 1 … N, N =
 * original_inference_steps), reversed, sampled at the indices ⌊j·N/n⌋, j = 0 … n−1.
 */
export function lcmTimesteps(config: SchedulerConfig, numInferenceSteps: number): number[] {
  checkInferenceSteps(config, numInferenceSteps);
  const original = config.original_inference_steps;
  const nTrain = config.num_train_timesteps;
  const n = numInferenceSteps;
  if (original > nTrain) {
    throw new PainterError(`scheduler config: original_inference_steps (${original}) cannot exceed num_train_timesteps (${nTrain})`);
  }
  if (n > original) {
    throw new PainterError(`an LCM scheduler takes at most original_inference_steps = ${original} steps; got ${n}`);
  }
  const k = Math.floor(nTrain / original);
  const origin = Array.from({ length: original }, (_, i) => (original - i) * k - 1);
  return Array.from({ length: n }, (_, j) => origin[Math.floor(j * (original / n))]!);
}

export class LcmScheduler implements Scheduler {
  readonly kind = 'lcm' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  readonly initNoiseSigma = 1;
  /** Every step but the last draws fresh noise (the last step's `noise` is ignored). */
  readonly needsNoise = true;
  private readonly stepIndex: StepIndex;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'lcm');
    if (this.config.thresholding) throw unsupported('lcm', 'thresholding=true', 'set it to false');
    this.schedule = noiseSchedule(this.config);
    this.timesteps = lcmTimesteps(this.config, numInferenceSteps);
    this.stepIndex = new StepIndex('lcm', this.timesteps);
  }

  /** The consistency model sees x_t as is (a new tensor). */
  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  /**
   * Boundary conditions of the consistency function at timestep t (LCM eq. 9 with diffusers'
   * discrete form): with c = timestep_scaling·t, c_skip = σ_data²/(c² + σ_data²) and
   * c_out = c/√(c² + σ_data²), so f_θ(x, t) = c_skip·x + c_out·x̂_0 → x at t = 0.
   */
  private scalings(t: number): { cSkip: number; cOut: number } {
    const c = f32(f32(t) * f32(this.config.timestep_scaling));
    const c2 = f32(f32(c * c) + SIGMA_DATA ** 2);
    return { cSkip: f32(SIGMA_DATA ** 2 / c2), cOut: f32(c / sqrt32(c2)) };
  }

  /** `noise` is the standard-normal draw that noises x̂_0 forward (unused at the last step). */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    const i = this.stepIndex.forStep(t);
    const last = i === this.timesteps.length - 1;
    if (!last) requireNoise('lcm', noise, sample);
    const c = this.config;
    const acpT = alphaCumprodAt(this.schedule, t);
    const acpNext = alphaCumprodAt(this.schedule, last ? t : this.timesteps[i + 1]!);
    const { cSkip, cOut } = this.scalings(t);
    const out = tf.tidy(() => {
      // x̂_0 from the model output, as DDIM (DDPM eq. 15 for ε).
      let x0 = predictOriginalSample(c.prediction_type, modelOutput, sample, sqrt32(acpT), sqrt32(f32(1 - acpT)));
      if (c.clip_sample) x0 = tf.clipByValue(x0, -c.clip_sample_range, c.clip_sample_range);
      // f_θ(x_t, t): the consistency model's estimate of x_0.
      const denoised = tf.add(tf.mul(x0, cOut), tf.mul(sample, cSkip));
      // Algorithm 1, line 6: x_{τ_{n−1}} = √ᾱ·x̂_0 + √(1−ᾱ)·z, except after the last step.
      const prevSample = last ? tf.clone(denoised) : tf.add(tf.mul(denoised, sqrt32(acpNext)), tf.mul(noise!, sqrt32(f32(1 - acpNext))));
      return { prevSample, predOriginalSample: denoised };
    });
    this.stepIndex.advance();
    return out;
  }

  /** √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at t = timesteps[index]. */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return addNoise(this.schedule, original, noise, timestepAt(this.timesteps, index));
  }

  setBeginIndex(index: number): void {
    this.stepIndex.begin(index);
  }

  dispose(): void {}
}

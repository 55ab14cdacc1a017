/**
 * DDIM inversion (Song et al. 2021 §4.3; diffusers' DDIMInverseScheduler): the deterministic DDIM
 * update run backwards, from the clean latents up the noise levels, giving the noise from which
 * DDIM regenerates the image. At timestep t the latents sit at the level one stride below, s; the
 * model is asked at t (the usual approximation ε(x_s, t) ≈ ε(x_s, s)), and
 * x_t = √ᾱ_t·x̂_0 + √(1−ᾱ_t)·ε̂ with x̂_0 and ε̂ from the model output at ᾱ_s, for ε, v or x_0.
 */
import * as tf from '@tensorflow/tfjs';
import { alphaCumprodAt, noiseSchedule, predictEpsilon, predictOriginalSample, schedulerConfigFor, spacedTimesteps, unsupported, type NoiseSchedule, type SchedulerConfig } from './common.js';
import { f32, sqrt32 } from './numerics.js';

export class DdimInverseScheduler {
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** Ascending: the noise levels the inversion climbs (DDIM's timesteps reversed). */
  readonly timesteps: readonly number[];
  private readonly stride: number;
  /** ᾱ below the first timestep: 1 (set_alpha_to_one) or ᾱ_0. */
  private readonly initialAlphaCumprod: number;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'ddim');
    if (this.config.timestep_spacing === 'linspace') throw unsupported('ddim', 'timestep_spacing="linspace" for inversion', 'use "leading" or "trailing" (as diffusers\' DDIMInverseScheduler)');
    this.schedule = noiseSchedule(this.config);
    this.timesteps = [...spacedTimesteps(this.config, numInferenceSteps)].reverse();
    this.stride = Math.floor(this.config.num_train_timesteps / numInferenceSteps);
    this.initialAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
  }

  /** x_t from x_s (s = t − stride) and the model output at t. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): tf.Tensor {
    const c = this.config;
    const s = Math.min(t - this.stride, c.num_train_timesteps - 1);
    const acpS = s >= 0 ? alphaCumprodAt(this.schedule, s) : this.initialAlphaCumprod;
    const acpT = alphaCumprodAt(this.schedule, t);
    const sqrtA = sqrt32(acpS);
    const sqrtB = sqrt32(f32(1 - acpS));
    return tf.tidy(() => {
      let x0 = predictOriginalSample(c.prediction_type, modelOutput, sample, sqrtA, sqrtB);
      const eps = predictEpsilon(c.prediction_type, modelOutput, sample, sqrtA, sqrtB);
      if (c.clip_sample) x0 = tf.clipByValue(x0, -c.clip_sample_range, c.clip_sample_range);
      return tf.add(tf.mul(x0, sqrt32(acpT)), tf.mul(eps, sqrt32(f32(1 - acpT))));
    });
  }
}

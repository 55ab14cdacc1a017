/**
 * DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), diffusers' DDIMScheduler:
 * deterministic for eta = 0, DDPM-like ancestral noise for eta > 0. Keeps no state across steps.
 */
import * as tf from '@tensorflow/tfjs';
import {
  alphaCumprodAt,
  noiseSchedule,
  predictEpsilon,
  predictOriginalSample,
  requireNoise,
  schedulerConfigFor,
  spacedTimesteps,
  timestepAt,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { f32, sqrt32 } from './numerics.js';
import { addNoise } from './ddpm.js';

export interface DdimOptions {
  /** η of eq. 16: 0 = deterministic DDIM, 1 = DDPM's variance. */
  eta?: number;
}

export class DdimScheduler implements Scheduler {
  readonly kind = 'ddim' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  readonly initNoiseSigma = 1;
  readonly needsNoise: boolean;
  readonly eta: number;
  private readonly numInferenceSteps: number;
  /** ᾱ after the final step: 1 (set_alpha_to_one) or ᾱ_0. */
  private readonly finalAlphaCumprod: number;

  constructor(config: SchedulerConfig, numInferenceSteps: number, opts: DdimOptions = {}) {
    this.config = schedulerConfigFor(config, 'ddim');
    if (this.config.thresholding) throw unsupported('ddim', 'thresholding=true', 'set it to false');
    this.schedule = noiseSchedule(this.config);
    this.timesteps = spacedTimesteps(this.config, numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
    this.eta = opts.eta ?? 0;
    if (!(this.eta >= 0 && Number.isFinite(this.eta))) throw new Error(`ddim: eta must be a finite number ≥ 0, got ${this.eta}`);
    this.needsNoise = this.eta > 0;
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  /** `noise` (standard normal) is needed when eta > 0. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    const c = this.config;
    // The previous timestep is one stride T/n back, whatever the spacing (as diffusers does).
    const prevT = t - Math.floor(c.num_train_timesteps / this.numInferenceSteps);
    const acpT = alphaCumprodAt(this.schedule, t);
    const acpPrev = prevT >= 0 ? alphaCumprodAt(this.schedule, prevT) : this.finalAlphaCumprod;
    const betaProdT = f32(1 - acpT);
    const sqrtAcpT = sqrt32(acpT);
    const sqrtBetaProdT = sqrt32(betaProdT);
    // σ_t(η) of eq. 16: η·√((1−ᾱ_{t−1})/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_{t−1}))
    const variance = f32(f32(f32(1 - acpPrev) / betaProdT) * f32(1 - f32(acpT / acpPrev)));
    const std = f32(f32(this.eta) * sqrt32(variance));
    const dirCoeff = sqrt32(f32(f32(1 - acpPrev) - f32(std * std)));
    if (this.needsNoise) requireNoise('ddim', noise, sample);
    return tf.tidy(() => {
      let x0 = predictOriginalSample(c.prediction_type, modelOutput, sample, sqrtAcpT, sqrtBetaProdT);
      // ε̂ consistent with the (unclipped) model output
      const eps = predictEpsilon(c.prediction_type, modelOutput, sample, sqrtAcpT, sqrtBetaProdT);
      if (c.clip_sample) x0 = tf.clipByValue(x0, -c.clip_sample_range, c.clip_sample_range);
      // eq. 12: x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1−ᾱ_{t−1}−σ_t²)·ε̂ + σ_t·z
      let prev = tf.add(tf.mul(x0, sqrt32(acpPrev)), tf.mul(eps, dirCoeff));
      if (this.needsNoise) prev = tf.add(prev, tf.mul(noise!, std));
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }

  /** √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at t = timesteps[index]. */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return addNoise(this.schedule, original, noise, timestepAt(this.timesteps, index));
  }

  /** Keeps no step count: nothing to set. */
  setBeginIndex(index: number): void {
    timestepAt(this.timesteps, index);
  }

  dispose(): void {}
}

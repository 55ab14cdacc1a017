/**
 * DDPM (Ho et al. 2020): the forward noising process that training samples from, the
 * training targets, and the ancestral reverse step (diffusers' DDPMScheduler).
 */
import * as tf from '@tensorflow/tfjs';
import {
  alphaCumprodAt,
  noiseSchedule,
  predictOriginalSample,
  requireNoise,
  schedulerConfigFor,
  spacedTimesteps,
  timestepAt,
  unsupported,
  type NoiseSchedule,
  type PredictionType,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { f32, sqrt32 } from './numerics.js';

/** Timesteps for a batch: one for all, one per batch element, or an int32 tensor of them. */
export type BatchTimesteps = number | readonly number[] | tf.Tensor;

/**
 * Per-batch-element coefficients f(ᾱ_t), shaped [B, 1, …, 1] to broadcast against a tensor of
 * rank `rank` (a scalar for a single timestep).
 */
function coefficient(schedule: NoiseSchedule, t: BatchTimesteps, rank: number, fn: (acp: number) => number): tf.Tensor {
  if (typeof t === 'number') return tf.scalar(fn(alphaCumprodAt(schedule, t)));
  const shape = [-1, ...Array<number>(rank - 1).fill(1)];
  if (t instanceof tf.Tensor) {
    return tf.tidy(() => tf.gather(tf.tensor1d(schedule.alphasCumprod.map(fn)), t.flatten().toInt()).reshape(shape));
  }
  return tf.tensor1d(t.map((ti) => fn(alphaCumprodAt(schedule, ti)))).reshape(shape);
}

const sqrtAlphaProd = (acp: number): number => sqrt32(acp);
const sqrtOneMinusAlphaProd = (acp: number): number => sqrt32(f32(1 - acp));

/** x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (DDPM eq. 4, reparametrised): the noisy sample training feeds the model. */
export function addNoise(schedule: NoiseSchedule, x0: tf.Tensor, noise: tf.Tensor, t: BatchTimesteps): tf.Tensor {
  return tf.tidy(() => {
    const a = coefficient(schedule, t, x0.rank, sqrtAlphaProd);
    const b = coefficient(schedule, t, x0.rank, sqrtOneMinusAlphaProd);
    return tf.add(tf.mul(a, x0), tf.mul(b, noise));
  });
}

/** v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022, §4): the v-prediction target. */
export function getVelocity(schedule: NoiseSchedule, x0: tf.Tensor, noise: tf.Tensor, t: BatchTimesteps): tf.Tensor {
  return tf.tidy(() => {
    const a = coefficient(schedule, t, x0.rank, sqrtAlphaProd);
    const b = coefficient(schedule, t, x0.rank, sqrtOneMinusAlphaProd);
    return tf.sub(tf.mul(a, noise), tf.mul(b, x0));
  });
}

/** What the model is trained to output: ε, v, or x_0 itself (a new tensor in every case). */
export function trainingTarget(
  predictionType: PredictionType,
  schedule: NoiseSchedule,
  x0: tf.Tensor,
  noise: tf.Tensor,
  t: BatchTimesteps,
): tf.Tensor {
  switch (predictionType) {
    case 'epsilon':
      return tf.clone(noise);
    case 'sample':
      return tf.clone(x0);
    case 'v_prediction':
      return getVelocity(schedule, x0, noise, t);
  }
}

/**
 * Ancestral sampling, DDPM eq. 6–7: x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t·z, with the posterior mean
 * μ̃_t = √ᾱ_{t−1}β_t/(1−ᾱ_t)·x̂_0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t, where β_t and α_t are those of
 * the (possibly strided) step t → t−T/n.
 */
export class DdpmScheduler implements Scheduler {
  readonly kind = 'ddpm' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  readonly initNoiseSigma = 1;
  readonly needsNoise = true;
  private readonly numInferenceSteps: number;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'ddpm');
    const c = this.config;
    if (c.thresholding) throw unsupported('ddpm', 'thresholding=true', 'set it to false');
    if (c.variance_type === null || !['fixed_small', 'fixed_small_log', 'fixed_large'].includes(c.variance_type)) {
      throw unsupported('ddpm', `variance_type=${JSON.stringify(c.variance_type)}`, 'use "fixed_small"');
    }
    this.schedule = noiseSchedule(c);
    this.timesteps = spacedTimesteps(c, numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  /** `noise` (standard normal) is used for t > 0. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    const c = this.config;
    const prevT = t - Math.floor(c.num_train_timesteps / this.numInferenceSteps);
    const acpT = alphaCumprodAt(this.schedule, t);
    const acpPrev = prevT >= 0 ? alphaCumprodAt(this.schedule, prevT) : 1;
    const betaProdT = f32(1 - acpT);
    const betaProdPrev = f32(1 - acpPrev);
    const alphaT = f32(acpT / acpPrev);
    const betaT = f32(1 - alphaT);
    // eq. 7 coefficients of x̂_0 and x_t
    const x0Coeff = f32(f32(sqrt32(acpPrev) * betaT) / betaProdT);
    const sampleCoeff = f32(f32(sqrt32(alphaT) * betaProdPrev) / betaProdT);
    let std = 0;
    if (t > 0) {
      requireNoise('ddpm', noise, sample);
      // σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t, floored at 1e-20 ('fixed_small'); β_t ('fixed_large').
      const variance = Math.max(f32(f32(betaProdPrev / betaProdT) * betaT), f32(1e-20));
      if (c.variance_type === 'fixed_small') std = sqrt32(variance);
      else if (c.variance_type === 'fixed_small_log') std = f32(Math.exp(f32(0.5 * f32(Math.log(variance)))));
      else std = sqrt32(betaT);
    }
    return tf.tidy(() => {
      let x0 = predictOriginalSample(c.prediction_type, modelOutput, sample, sqrt32(acpT), sqrt32(betaProdT));
      if (c.clip_sample) x0 = tf.clipByValue(x0, -c.clip_sample_range, c.clip_sample_range);
      let prev = tf.add(tf.mul(x0, x0Coeff), tf.mul(sample, sampleCoeff));
      if (t > 0) prev = tf.add(prev, tf.mul(noise!, std));
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

/**
 * Euler ancestral sampling in σ-space (Karras et al. 2022; k-diffusion's sample_euler_ancestral),
 * diffusers' EulerAncestralDiscreteScheduler. σ_t = √((1−ᾱ_t)/ᾱ_t), the sample lives at scale
 * x = x_0 + σ·ε, so the model sees x/√(σ²+1). The ancestral noise is an explicit input.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
  indexForTimestep,
  timestepAt,
  noiseSchedule,
  requireNoise,
  schedulerConfigFor,
  trainingSigmas,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { f32, npArange, npInterp, npLinspace, roundHalfEven, sqrt32 } from './numerics.js';

export class EulerAncestralScheduler implements Scheduler {
  readonly kind = 'euler-a' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** Float32 timesteps; fractional for 'linspace' spacing. */
  readonly timesteps: readonly number[];
  /** σ for each timestep, then 0. */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma: number;
  readonly needsNoise = true;
  private stepIndex: number | undefined;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'euler-a');
    const c = this.config;
    if (c.prediction_type === 'sample') throw unsupported('euler-a', 'prediction_type="sample"', 'use "epsilon" or "v_prediction"');
    checkInferenceSteps(c, numInferenceSteps);
    this.schedule = noiseSchedule(c, { finiteTerminalSigma: true });
    const alphasCumprod = this.schedule.alphasCumprod;

    const nTrain = c.num_train_timesteps;
    const n = numInferenceSteps;
    let timesteps: number[];
    switch (c.timestep_spacing) {
      case 'linspace':
        timesteps = npLinspace(0, nTrain - 1, n).map(f32).reverse();
        break;
      case 'leading': {
        const ratio = Math.floor(nTrain / n);
        timesteps = Array.from({ length: n }, (_, i) => f32((n - 1 - i) * ratio + c.steps_offset));
        break;
      }
      case 'trailing':
        timesteps = npArange(nTrain, 0, -nTrain / n).map((t) => f32(roundHalfEven(t) - 1));
        break;
    }
    this.timesteps = timesteps;
    const table = trainingSigmas(alphasCumprod);
    const grid = Array.from({ length: table.length }, (_, i) => i);
    this.sigmas = Float32Array.from([...timesteps.map((t) => npInterp(t, grid, table)), 0]);
    const sigmaMax = this.sigmas.reduce((m, s) => Math.max(m, s), 0);
    this.initNoiseSigma = c.timestep_spacing === 'leading' ? sqrt32(f32(f32(sigmaMax * sigmaMax) + 1)) : sigmaMax;
  }

  private index(t: number): number {
    if (this.stepIndex === undefined) {
      const i = indexForTimestep(this.timesteps, t);
      if (i === undefined) throw new Error(`euler-a: timestep ${t} is not one of the scheduler's timesteps`);
      this.stepIndex = i;
    }
    return this.stepIndex;
  }

  /** x / √(σ² + 1): the variance-preserving input the ε-model was trained on. */
  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    const sigma = this.sigmas[this.index(t)]!;
    return tf.div(sample, sqrt32(f32(f32(sigma * sigma) + 1)));
  }

  /** `noise` is the ancestral standard-normal draw of this step. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    const i = this.index(t);
    const sigma = this.sigmas[i]!;
    const sigmaTo = this.sigmas[i + 1];
    if (sigmaTo === undefined) throw new Error('euler-a: step() past the last timestep');
    requireNoise('euler-a', noise, sample);
    // Split the move to σ_to into a deterministic part down to σ_down and fresh noise σ_up,
    // with σ_down² + σ_up² = σ_to² (k-diffusion get_ancestral_step, eta = 1).
    const s2 = f32(sigma * sigma);
    const to2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = sqrt32(f32(f32(to2 * f32(s2 - to2)) / s2));
    const sigmaDown = sqrt32(f32(to2 - f32(sigmaUp * sigmaUp)));
    const dt = f32(sigmaDown - sigma);
    const out = tf.tidy(() => {
      const x0 =
        this.config.prediction_type === 'epsilon'
          ? tf.sub(sample, tf.mul(modelOutput, sigma))
          : // v-prediction: x̂_0 = c_skip·x + c_out·v with c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1)
            tf.add(tf.mul(modelOutput, f32(-sigma / sqrt32(f32(s2 + 1)))), tf.div(sample, f32(s2 + 1)));
      // Euler step on dx/dσ = (x − x̂_0)/σ
      const derivative = tf.div(tf.sub(sample, x0), sigma);
      const prev = tf.add(tf.add(sample, tf.mul(derivative, dt)), tf.mul(noise!, sigmaUp));
      return { prevSample: prev, predOriginalSample: x0 };
    });
    this.stepIndex = i + 1;
    return out;
  }

  /** x_0 + σ·ε at σ = sigmas[index] (the loop divides by √(σ²+1) in scaleModelInput). */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    timestepAt(this.timesteps, index);
    const sigma = this.sigmas[index]!;
    return tf.tidy(() => tf.add(original, tf.mul(noise, sigma)));
  }

  setBeginIndex(index: number): void {
    timestepAt(this.timesteps, index);
    this.stepIndex = index;
  }

  dispose(): void {}
}

/**
 * Euler's method on the probability-flow ODE in σ-space (Karras et al. 2022, Algorithm 1 with
 * no churn; k-diffusion's sample_euler), diffusers' EulerDiscreteScheduler: AUTOMATIC1111's
 * "Euler". The sample lives at x = x_0 + σ·ε, the model sees x/√(σ²+1), and each step follows
 * dx/dσ = (x − x̂_0)/σ from σ_i to σ_{i+1}.
 *
 * diffusers' step() takes s_churn (default 0) and draws noise that only churn uses; painter's
 * Euler is the s_churn = 0 sampler, so it is deterministic and needs no noise.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
  noiseSchedule,
  schedulerConfigFor,
  trainingSigmas,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { f32 } from './numerics.js';
import { eulerStep, sigmaAddNoise, sigmaDerivative, sigmaPredictOriginal, sigmaScaleInput } from './sigma-sampler.js';
import { discreteSigmaSteps, initNoiseSigmaOf, sigmaSpacingOf } from './sigma-schedules.js';
import { StepIndex } from './step-index.js';

export class EulerDiscreteScheduler implements Scheduler {
  readonly kind = 'euler' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** Float32 timesteps: fractional for 'linspace' spacing and for Karras/exponential σ. */
  readonly timesteps: readonly number[];
  /** σ for each step, then the final σ (0, or σ_0 for final_sigmas_type 'sigma_min'). */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma: number;
  readonly needsNoise = false;
  private readonly stepIndex: StepIndex;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'euler');
    const c = this.config;
    checkInferenceSteps(c, numInferenceSteps);
    this.schedule = noiseSchedule(c, { finiteTerminalSigma: true });
    const table = trainingSigmas(this.schedule.alphasCumprod);
    const { timesteps, sigmas } = discreteSigmaSteps(c, table, numInferenceSteps, {
      spacing: sigmaSpacingOf('euler', c),
      logLinear: c.interpolation_type === 'log_linear',
      sigmaMin: c.sigma_min,
      sigmaMax: c.sigma_max,
      finalSigma: c.final_sigmas_type === 'zero' ? 0 : table[0]!,
    });
    this.sigmas = sigmas;
    // Continuous timesteps (EDM-style v-models): the model is fed c_noise = ¼·log σ.
    this.timesteps =
      c.timestep_type === 'continuous' && c.prediction_type === 'v_prediction'
        ? Array.from(sigmas.subarray(0, -1), (s) => f32(0.25 * f32(Math.log(s))))
        : timesteps;
    this.initNoiseSigma = initNoiseSigmaOf(c, sigmas);
    this.stepIndex = new StepIndex('euler', this.timesteps);
  }

  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    return sigmaScaleInput(sample, this.sigmas[this.stepIndex.of(t)]!);
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): StepOutput {
    const i = this.stepIndex.forStep(t);
    const sigma = this.sigmas[i]!;
    const sigmaNext = this.sigmas[i + 1]!;
    const out = tf.tidy(() => {
      const x0 = sigmaPredictOriginal(this.config.prediction_type, modelOutput, sample, sigma);
      const prevSample = eulerStep(sample, sigmaDerivative(sample, x0, sigma), sigma, sigmaNext);
      return { prevSample, predOriginalSample: x0 };
    });
    this.stepIndex.advance();
    return out;
  }

  /** x_0 + σ·ε (the loop divides by √(σ²+1) in scaleModelInput). */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return sigmaAddNoise(this.timesteps, this.sigmas, original, noise, index);
  }

  setBeginIndex(index: number): void {
    this.stepIndex.begin(index);
  }

  dispose(): void {}
}

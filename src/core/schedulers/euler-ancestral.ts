/**
 * Euler ancestral sampling in σ-space (Karras et al. 2022; k-diffusion's sample_euler_ancestral),
 * diffusers' EulerAncestralDiscreteScheduler. σ_t = √((1−ᾱ_t)/ᾱ_t), the sample lives at scale
 * x = x_0 + σ·ε, so the model sees x/√(σ²+1). The ancestral noise is an explicit input.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
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
import { f32, sqrt32 } from './numerics.js';
import { eulerStep, sigmaAddNoise, sigmaDerivative, sigmaPredictOriginal, sigmaScaleInput } from './sigma-sampler.js';
import { discreteSigmaSteps, initNoiseSigmaOf, sigmaSpacingOf } from './sigma-schedules.js';
import { StepIndex } from './step-index.js';

export class EulerAncestralScheduler implements Scheduler {
  readonly kind = 'euler-a' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** Float32 timesteps; fractional for 'linspace' spacing and for Karras/exponential σ. */
  readonly timesteps: readonly number[];
  /** σ for each timestep, then 0. */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma: number;
  readonly needsNoise = true;
  private readonly stepIndex: StepIndex;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'euler-a');
    const c = this.config;
    if (c.prediction_type === 'sample') throw unsupported('euler-a', 'prediction_type="sample"', 'use "epsilon" or "v_prediction"');
    checkInferenceSteps(c, numInferenceSteps);
    this.schedule = noiseSchedule(c, { finiteTerminalSigma: true });
    // diffusers' EulerAncestralDiscreteScheduler has no use_karras_sigmas (0.30.3) nor
    // use_exponential_sigmas; AUTOMATIC1111 offers "Euler a" with Karras σ, so painter spaces σ
    // as EulerDiscreteScheduler does (float timesteps mapped back from σ, range from the spaced
    // timesteps' σ). createScheduler clears both flags for 'automatic', as from_config drops them.
    const { timesteps, sigmas } = discreteSigmaSteps(c, trainingSigmas(this.schedule.alphasCumprod), numInferenceSteps, {
      spacing: sigmaSpacingOf('euler-a', c),
    });
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    this.initNoiseSigma = initNoiseSigmaOf(c, sigmas);
    this.stepIndex = new StepIndex('euler-a', this.timesteps);
  }

  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    return sigmaScaleInput(sample, this.sigmas[this.stepIndex.of(t)]!);
  }

  /** `noise` is the ancestral standard-normal draw of this step. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    const i = this.stepIndex.forStep(t);
    const sigma = this.sigmas[i]!;
    const sigmaTo = this.sigmas[i + 1]!;
    requireNoise('euler-a', noise, sample);
    // Split the move to σ_to into a deterministic part down to σ_down and fresh noise σ_up,
    // with σ_down² + σ_up² = σ_to² (k-diffusion get_ancestral_step, eta = 1).
    const s2 = f32(sigma * sigma);
    const to2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = sqrt32(f32(f32(to2 * f32(s2 - to2)) / s2));
    const sigmaDown = sqrt32(f32(to2 - f32(sigmaUp * sigmaUp)));
    const out = tf.tidy(() => {
      const x0 = sigmaPredictOriginal(this.config.prediction_type, modelOutput, sample, sigma);
      const down = eulerStep(sample, sigmaDerivative(sample, x0, sigma), sigma, sigmaDown);
      return { prevSample: tf.add(down, tf.mul(noise!, sigmaUp)), predOriginalSample: x0 };
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

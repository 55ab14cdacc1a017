/**
 * Heun's second-order method on the probability-flow ODE in σ-space (Karras et al. 2022,
 * Algorithm 1 with no churn; k-diffusion's sample_heun), diffusers' HeunDiscreteScheduler:
 * AUTOMATIC1111's "Heun". Each step σ_i → σ_{i+1} takes an Euler predictor d_i = (x − x̂_0)/σ_i,
 * evaluates the model again at the predicted point and steps with the mean of the two slopes;
 * the last step, to σ = 0, is plain Euler. The loop therefore sees the timesteps
 * [t_0, t_1, t_1, t_2, t_2, …, t_{n−1}, t_{n−1}]: 2n − 1 model evaluations, each entry either a
 * first-order (predictor) or second-order (corrector) half-step.
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
import { eulerStep, sigmaAddNoise, sigmaDerivative, sigmaPredictOriginal, sigmaScaleInput } from './sigma-sampler.js';
import { discreteSigmaSteps, initNoiseSigmaOf, sigmaSpacingOf } from './sigma-schedules.js';
import { StepIndex } from './step-index.js';

/** The predictor's state, kept for the corrector half-step. */
interface Predictor {
  /** x at σ_i, where the step started */
  sample: tf.Tensor;
  /** d_i = (x − x̂_0)/σ_i */
  derivative: tf.Tensor;
  /** σ_i and σ_{i+1}, the step's ends */
  sigma: number;
  sigmaNext: number;
}

export class HeunDiscreteScheduler implements Scheduler {
  readonly kind = 'heun' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** t_0, then each later timestep twice (float32). */
  readonly timesteps: readonly number[];
  /** σ_0, then σ_1 … σ_{n−1} each twice, then 0: sigmas[k] is the level of timesteps[k]. */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma: number;
  readonly needsNoise = false;
  /**
   * Timestep entries per step (diffusers' `order`): image-to-image starting at step k starts at
   * timesteps[k·order], as diffusers' get_timesteps and set_begin_index do.
   */
  readonly order = 2;
  private readonly stepIndex: StepIndex;
  private predictor: Predictor | undefined;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'heun');
    const c = this.config;
    checkInferenceSteps(c, numInferenceSteps);
    // HeunDiscreteScheduler (0.30.3) takes no rescale_betas_zero_snr, final_sigmas_type,
    // interpolation_type nor sigma_min/sigma_max: from_config drops them, and so does painter.
    this.schedule = noiseSchedule({ ...c, rescale_betas_zero_snr: false });
    const table = trainingSigmas(this.schedule.alphasCumprod);
    const steps = discreteSigmaSteps(c, table, numInferenceSteps, { spacing: sigmaSpacingOf('heun', c) });
    const repeat = <T>(xs: ArrayLike<T>, from: number, to: number): T[] => Array.from(xs).slice(from, to).flatMap((x) => [x, x]);
    const s = steps.sigmas;
    this.sigmas = Float32Array.from([s[0]!, ...repeat(s, 1, s.length - 1), s[s.length - 1]!]);
    this.timesteps = [steps.timesteps[0]!, ...repeat(steps.timesteps, 1, steps.timesteps.length)];
    this.initNoiseSigma = initNoiseSigmaOf(c, this.sigmas);
    this.stepIndex = new StepIndex('heun', this.timesteps);
  }

  /** True when the next step() is a predictor (first-order) half-step. */
  get inFirstOrder(): boolean {
    return this.predictor === undefined;
  }

  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    return sigmaScaleInput(sample, this.sigmas[this.stepIndex.of(t)]!);
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): StepOutput {
    const i = this.stepIndex.forStep(t);
    const c = this.config;
    const x0Of = (sigma: number): tf.Tensor => {
      const x0 = sigmaPredictOriginal(c.prediction_type, modelOutput, sample, sigma);
      return c.clip_sample ? tf.clipByValue(x0, -c.clip_sample_range, c.clip_sample_range) : x0;
    };
    const p = this.predictor;
    let out: StepOutput;
    if (!p) {
      // Predictor: Euler from σ_i to σ_{i+1}; keep x and d_i for the corrector.
      const sigma = this.sigmas[i]!;
      const sigmaNext = this.sigmas[i + 1]!;
      const kept = tf.tidy(() => {
        const x0 = x0Of(sigma);
        const derivative = sigmaDerivative(sample, x0, sigma);
        return { x0, derivative, prevSample: eulerStep(sample, derivative, sigma, sigmaNext) };
      });
      out = { prevSample: kept.prevSample, predOriginalSample: kept.x0 };
      // At σ_{i+1} = 0 (the last step) there is no corrector: the Euler step stands. The state
      // outlives a tidy the caller may run step() in (the denoising loop does).
      if (sigmaNext !== 0) this.predictor = { sample: tf.keep(tf.clone(sample)), derivative: tf.keep(kept.derivative), sigma, sigmaNext };
      else kept.derivative.dispose();
    } else {
      // Corrector: the slope at the predicted point (σ_{i+1} = sigmas[i]), averaged with d_i,
      // for the same step from x at σ_i.
      const sigmaNext = this.sigmas[i]!;
      out = tf.tidy(() => {
        const x0 = x0Of(sigmaNext);
        const derivative = tf.div(tf.add(p.derivative, sigmaDerivative(sample, x0, sigmaNext)), 2);
        return { prevSample: eulerStep(p.sample, derivative, p.sigma, p.sigmaNext), predOriginalSample: x0 };
      });
      tf.dispose([p.sample, p.derivative]);
      this.predictor = undefined;
    }
    this.stepIndex.advance();
    return out;
  }

  /** x_0 + σ·ε (the loop divides by √(σ²+1) in scaleModelInput). */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return sigmaAddNoise(this.timesteps, this.sigmas, original, noise, index);
  }

  /** A begin index should be a predictor entry (0, or even: t_start·2 as diffusers' img2img sets it). */
  setBeginIndex(index: number): void {
    this.stepIndex.begin(index);
  }

  dispose(): void {
    if (this.predictor) tf.dispose([this.predictor.sample, this.predictor.derivative]);
    this.predictor = undefined;
  }
}

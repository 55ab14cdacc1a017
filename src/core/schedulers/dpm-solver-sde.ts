/**
 * DPM-Solver++(2S) with ancestral noise, the SDE sampler of k-diffusion's sample_dpmpp_sde
 * (AUTOMATIC1111's "DPM++ SDE"; diffusers' DPMSolverSDEScheduler, r = ½, η = 1). Each step from
 * σ to σ_next is two model evaluations: a noisy first-order step to the midpoint σ_s =
 * √(σ·σ_next) (the midpoint in t = −log σ), then a step from σ to σ_next with the denoised
 * estimate taken there (Lu et al. 2022b, DPM-Solver++ Algorithm 1 as a singlestep 2S solver, with
 * Karras et al. 2022's split of each move into σ_down and fresh noise σ_up). The final step to
 * σ = 0 is one Euler step. As in diffusers, `timesteps` interleaves the steps' timesteps with
 * their midpoints' (fractional) ones, and the loop calls step() once per entry: 2n − 1 model
 * evaluations for n steps (diffusers' `order` is 2, so image-to-image starts at an even index).
 * use_karras_sigmas (0.30.3) and use_exponential_sigmas (diffusers ≥ 0.31) space the n σ over
 * the range of the spaced ones, at the fractional timesteps that map back to them.
 *
 * Noise. diffusers and k-diffusion draw it from a Brownian tree W(σ) seeded once per run: the
 * first stage adds (W(σ_s) − W(σ))/√(σ − σ_s), the second (W(σ_next) − W(σ))/√(σ − σ_next).
 * Each is standard normal, and the increments of different steps are independent; the two of
 * one step overlap, so the second is correlated with the first. painter takes a standard-normal
 * tensor per evaluation instead: z₁ at the first stage and a fresh z₂ at the second, from which
 * it builds the second increment as (√a·z₁ + √b·z₂)/√(a + b), a = σ − σ_s, b = σ_s − σ_next: the
 * same Brownian increments, so the sampler is the same process in distribution. The draws
 * themselves differ from the tree's, so an image differs from AUTOMATIC1111's or diffusers' for
 * the same seed (as it does for every painter sampler whose noise comes from painter's RNG).
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
  noiseSchedule,
  requireNoise,
  schedulerConfigFor,
  timestepAt,
  timestepGrid,
  trainingSigmas,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { f32, sqrt32 } from './numerics.js';
import { eulerStep, sigmaAddNoise, sigmaDerivative, sigmaPredictOriginal, sigmaScaleInput } from './sigma-sampler.js';
import { initNoiseSigmaOf, interpolateSigmas, logSigmaTable, sigmaSpacingOf, sigmaToT, spacedSigmas } from './sigma-schedules.js';
import { StepIndex } from './step-index.js';

/** t = −log σ (k-diffusion's t_fn) and back (sigma_fn), as float32 ops. */
const tOf = (sigma: number): number => -f32(Math.log(sigma));
const sigmaOf = (t: number): number => f32(Math.exp(-t));

/** The first-stage state a second stage needs. */
interface Midpoint {
  /** x at σ, where the step started. */
  sample: tf.Tensor;
  /** z₁, the first stage's draw. */
  noise: tf.Tensor;
  /** σ_s, the midpoint's noise level. */
  sigma: number;
}

export class DpmSolverSdeScheduler implements Scheduler {
  readonly kind = 'dpm++sde' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  /** t_0, t_mid(0), t_1, t_mid(1), …, t_{n−1} (float64; midpoints fractional). */
  readonly timesteps: readonly number[];
  /** σ_0, σ_1, σ_1, σ_2, σ_2, …, σ_{n−1}, σ_{n−1}, 0 (diffusers' interleaved float32 sigmas). */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma: number;
  readonly needsNoise = true;
  /** Model evaluations per step (diffusers' scheduler.order). */
  readonly order = 2;
  private readonly stepIndex: StepIndex;
  private midpoint: Midpoint | undefined;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    // DPMSolverSDEScheduler has no rescale_betas_zero_snr option: from_config drops it.
    this.config = { ...schedulerConfigFor(config, 'dpm++sde'), rescale_betas_zero_snr: false };
    const c = this.config;
    if (c.prediction_type === 'sample') throw unsupported('dpm++sde', 'prediction_type="sample"', 'use "epsilon" or "v_prediction"');
    const spacing = sigmaSpacingOf('dpm++sde', c);
    checkInferenceSteps(c, numInferenceSteps);
    this.schedule = noiseSchedule(c);
    const n = numInferenceSteps;
    // float64, fractional for 'linspace' (diffusers keeps the numpy array).
    let steps = timestepGrid(c, n);
    const table = trainingSigmas(this.schedule.alphasCumprod);
    const logTable = logSigmaTable(table);
    let sigmas = interpolateSigmas(steps, table);
    if (spacing) {
      // Over the range of the spaced σ, to the fractional timesteps that map back to them (float64).
      ({ sigmas, timesteps: steps } = spacedSigmas(spacing, sigmas[n - 1]!, sigmas[0]!, n, logTable));
    }
    // Midpoints in t = −log σ, mapped back to (fractional) training timesteps, in float64.
    const mids = sigmas.slice(0, -1).map((s, i) => {
      const t = -Math.log(s);
      return sigmaToT(Math.exp(-(t + (-Math.log(sigmas[i + 1]!) - t) * 0.5)), logTable);
    });
    this.timesteps = steps.flatMap((t, i) => (i === 0 ? [t] : [mids[i - 1]!, t]));
    const s32 = [...sigmas, 0].map(f32);
    this.sigmas = Float32Array.from([s32[0]!, ...s32.slice(1, -1).flatMap((s) => [s, s]), 0]);
    this.initNoiseSigma = initNoiseSigmaOf(c, this.sigmas);
    this.stepIndex = new StepIndex('dpm++sde', this.timesteps);
  }

  /** x / √(σ² + 1) at σ of the step, or at the midpoint's σ_s in a second stage. */
  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    return sigmaScaleInput(sample, this.midpoint ? this.midpoint.sigma : this.sigmas[this.stepIndex.of(t)]!);
  }

  /** `noise`: z₁ in a first stage, z₂ in a second (see the file comment); unused in the final Euler step. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    const i = this.stepIndex.forStep(t);
    const mid = this.midpoint;
    const sigma = this.sigmas[mid ? i - 1 : i]!;
    const sigmaNext = this.sigmas[mid ? i : i + 1]!;
    const tS = tOf(sigma);
    const tNext = tOf(sigmaNext);
    const tMid = f32(tS + f32(f32(tNext - tS) * 0.5));
    const sigmaIn = mid ? sigmaOf(tMid) : sigma;
    if (sigmaNext !== 0) requireNoise('dpm++sde', noise, sample);

    const out = tf.tidy(() => {
      // x̂_0 at the noise level the model saw (Karras et al. 2022, Table 1: c_skip, c_out).
      const x0 = sigmaPredictOriginal(this.config.prediction_type, modelOutput, sample, sigmaIn);
      // The last step, down to σ = 0, is one Euler step.
      if (sigmaNext === 0) return { prevSample: eulerStep(sample, sigmaDerivative(sample, x0, sigma), sigma, sigmaNext), predOriginalSample: x0 };
      // First stage: from σ to σ_s with x̂_0(x, σ). Second: from σ to σ_next, restarting at x
      // with x̂_0 at the midpoint (r = ½ makes DPM-Solver++(2S)'s D = x̂_0 of the midpoint).
      const from = mid ? mid.sample : sample;
      const sigmaFrom = sigmaOf(tS);
      const sigmaTo = sigmaOf(mid ? tNext : tMid);
      // Karras' ancestral split (η = 1): σ_down² + σ_up² = σ_to².
      const from2 = f32(sigmaFrom * sigmaFrom);
      const to2 = f32(sigmaTo * sigmaTo);
      const sigmaUp = Math.min(sigmaTo, sqrt32(f32(f32(to2 * f32(from2 - to2)) / from2)));
      const sigmaDown = sqrt32(f32(to2 - f32(sigmaUp * sigmaUp)));
      const tDown = tOf(sigmaDown);
      // DPM-Solver++ first-order update in t: x = (σ_down/σ)·x − (e^{−(t_down − t)} − 1)·x̂_0.
      const deterministic = tf.sub(tf.mul(from, f32(sigmaOf(tDown) / sigmaFrom)), tf.mul(x0, f32(Math.expm1(f32(tS - tDown)))));
      const z = mid ? this.wholeStepNoise(mid, noise!, sigmaFrom, sigmaTo) : noise!;
      return { prevSample: tf.add(deterministic, tf.mul(z, sigmaUp)), predOriginalSample: x0 };
    });

    if (mid) {
      tf.dispose([mid.sample, mid.noise]);
      this.midpoint = undefined;
    } else if (sigmaNext !== 0) {
      this.midpoint = { sample: tf.keep(tf.clone(sample)), noise: tf.keep(tf.clone(noise!)), sigma: sigmaOf(tMid) };
    }
    this.stepIndex.advance();
    return out;
  }

  /**
   * (W(σ_next) − W(σ))/√(σ − σ_next) from the first stage's (W(σ_s) − W(σ))/√(σ − σ_s) = z₁ and
   * the independent (W(σ_next) − W(σ_s))/√(σ_s − σ_next) = z₂.
   */
  private wholeStepNoise(mid: Midpoint, z2: tf.Tensor, sigmaFrom: number, sigmaTo: number): tf.Tensor {
    const total = sigmaFrom - sigmaTo;
    const a = Math.min(Math.max(sigmaFrom - mid.sigma, 0), total);
    return tf.add(tf.mul(mid.noise, Math.sqrt(a / total)), tf.mul(z2, Math.sqrt((total - a) / total)));
  }

  /** x_0 + σ·ε (the loop divides by √(σ²+1) in scaleModelInput). */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return sigmaAddNoise(this.timesteps, this.sigmas, original, noise, index);
  }

  /** `index` must start a whole step (an even index: diffusers' t_start · order). */
  setBeginIndex(index: number): void {
    timestepAt(this.timesteps, index);
    if (index % 2 !== 0) throw new RangeError(`dpm++sde: begin index ${index} is a midpoint; a step starts at an even index`);
    this.stepIndex.begin(index);
  }

  dispose(): void {
    if (this.midpoint) tf.dispose([this.midpoint.sample, this.midpoint.noise]);
    this.midpoint = undefined;
  }
}

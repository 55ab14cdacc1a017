/**
 * Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast
 * Solver for Guided Sampling"), diffusers' DPMSolverMultistepScheduler. Stable Diffusion's
 * "DPM++ 2M" is algorithm_type 'dpmsolver++', solver_order 2. Orders 1–3, the midpoint/heun
 * second-order variants and Karras/exponential σ are implemented; Lu lambdas, thresholding and
 * learned variances are not.
 *
 * The SDE variants (Lu et al. 2022b §5 / Gonzalez et al. 2023's SDE-DPM-Solver++(2M)), orders 1
 * and 2, are the kind 'dpm++2m-sde': AUTOMATIC1111's "DPM++ 2M SDE" (k-diffusion's
 * sample_dpmpp_2m_sde, η = 1) is algorithm_type 'sde-dpmsolver++'. Each step adds fresh noise, an
 * explicit input here as diffusers' variance_noise; k-diffusion's Brownian-tree increments over
 * the steps' disjoint σ intervals are independent standard normals too, so the sampler is the
 * same process in distribution (the draws, and so the images for a seed, differ).
 *
 * Symbols: α_t = 1/√(σ²+1), σ_t = σ·α_t, λ_t = log α_t − log σ_t (half log-SNR), h = λ_t − λ_s.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
  noiseSchedule,
  requireNoise,
  schedulerConfigFor,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { alphaSigma, convertModelOutput, multistepAddNoise, multistepSigmaSteps, OutputHistory, type AlphaSigma } from './multistep-solver.js';
import { f32, sqrt32 } from './numerics.js';
import { sigmaSpacingOf } from './sigma-schedules.js';
import { StepIndex } from './step-index.js';

/**
 * The scalars of the SDE updates at step size h: for DPM-Solver++ the decay e^{−h}, 1 − e^{−2h},
 * c0 = α_t(1 − e^{−2h}) and the noise scale σ_t√(1 − e^{−2h}); for DPM-Solver c0 = σ_t(e^h − 1)
 * and the noise scale σ_t√(e^{2h} − 1).
 */
function sdeTerms(h: number, t: AlphaSigma, data: boolean): { decay: number; oneMinus: number; c0: number; noise: number } {
  if (data) {
    const oneMinus = f32(1 - f32(Math.exp(f32(-2 * h))));
    return { decay: f32(Math.exp(-h)), oneMinus, c0: f32(t.alpha * oneMinus), noise: f32(t.sigma * sqrt32(oneMinus)) };
  }
  const grow = f32(f32(Math.exp(f32(2 * h))) - 1);
  return { decay: 1, oneMinus: grow, c0: f32(t.sigma * f32(f32(Math.exp(h)) - 1)), noise: f32(t.sigma * sqrt32(grow)) };
}

export type DpmSolverKind = 'dpm++2m' | 'dpm++2m-sde';

export class DpmSolverMultistepScheduler implements Scheduler {
  readonly kind: DpmSolverKind;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  /** σ for each timestep, then the final σ (0 or σ_min). */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma = 1;
  /** The SDE variants add a standard-normal draw each step. */
  readonly needsNoise: boolean;
  private readonly stepIndex: StepIndex;
  /** Converted outputs (x̂_0 for ++, ε̂ otherwise) of the last `solver_order` steps. */
  private readonly history: OutputHistory;
  private lowerOrderNums = 0;

  /**
   * `kind` 'dpm++2m' runs the config's ODE algorithm_type; 'dpm++2m-sde' its SDE one, or
   * 'sde-dpmsolver++' when the config names an ODE one.
   */
  constructor(config: SchedulerConfig, numInferenceSteps: number, kind: DpmSolverKind = 'dpm++2m') {
    this.kind = kind;
    const given = schedulerConfigFor(config, kind);
    const sde = given.algorithm_type === 'sde-dpmsolver++' || given.algorithm_type === 'sde-dpmsolver';
    if (kind === 'dpm++2m' && sde) {
      throw unsupported('dpm++2m', `algorithm_type="${given.algorithm_type}"`, 'use "dpmsolver++" (or the dpm++2m-sde sampler)');
    }
    this.config = kind === 'dpm++2m-sde' && !sde ? { ...given, algorithm_type: 'sde-dpmsolver++' } : given;
    const c = this.config;
    this.needsNoise = kind === 'dpm++2m-sde';
    if ((c.algorithm_type === 'dpmsolver' || c.algorithm_type === 'sde-dpmsolver') && c.final_sigmas_type === 'zero') {
      throw unsupported(kind, `final_sigmas_type="zero" with algorithm_type="${c.algorithm_type}"`, 'use "sigma_min"');
    }
    // diffusers has no third-order SDE update (its step fails there).
    if (this.needsNoise && c.solver_order > 2) throw unsupported(kind, `solver_order=${c.solver_order} with algorithm_type="${c.algorithm_type}"`, 'use 1 or 2');
    const spacing = sigmaSpacingOf('dpm++2m', c);
    if (c.use_lu_lambdas) throw unsupported('dpm++2m', 'use_lu_lambdas=true', 'set it to false');
    if (c.thresholding) throw unsupported('dpm++2m', 'thresholding=true', 'set it to false');
    if (c.variance_type !== null) throw unsupported('dpm++2m', `variance_type="${c.variance_type}"`, 'set it to null');
    checkInferenceSteps(c, numInferenceSteps);
    this.schedule = noiseSchedule(c, { finiteTerminalSigma: true });
    const alphasCumprod = this.schedule.alphasCumprod;

    // Stop short of timesteps whose λ is below lambda_min_clipped (matters for cosine schedules).
    const lambdas = Array.from(alphasCumprod, (a) => f32(f32(Math.log(sqrt32(a))) - f32(Math.log(sqrt32(f32(1 - a))))));
    const flipped = lambdas.reverse();
    let clippedIdx = flipped.findIndex((l) => l >= c.lambda_min_clipped);
    if (clippedIdx < 0) clippedIdx = flipped.length;
    const last = c.num_train_timesteps - clippedIdx;
    ({ timesteps: this.timesteps, sigmas: this.sigmas } = multistepSigmaSteps(c, this.schedule, numInferenceSteps, spacing, last));
    this.stepIndex = new StepIndex(kind, this.timesteps, 'last');
    this.history = new OutputHistory(kind, c.solver_order);
  }

  /** The sampler works on the unscaled sample: the input is returned as is (a new tensor). */
  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  /** `noise`: the SDE variants' standard-normal draw of this step. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, noise?: tf.Tensor): StepOutput {
    this.history.throwIfDisposed();
    if (this.needsNoise) requireNoise(this.kind, noise, sample);
    const c = this.config;
    const i = this.stepIndex.forStep(t);
    const steps = this.timesteps.length;
    // Lower orders at the end stabilise few-step sampling (and a final σ of 0 needs first order).
    const lowerOrderFinal =
      i === steps - 1 && (c.euler_at_final || (c.lower_order_final && steps < 15) || c.final_sigmas_type === 'zero');
    const lowerOrderSecond = i === steps - 2 && c.lower_order_final && steps < 15;
    const order =
      c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal
        ? 1
        : c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond
          ? 2
          : 3;

    const out = tf.tidy(() => {
      const converted = convertModelOutput(c.prediction_type, this.dataPrediction, modelOutput, sample, this.sigmas[i]!);
      this.history.push(converted);
      // m0 is this step's converted output, m1 and m2 those of the steps before.
      const [m0, m1, m2] = [0, 1, 2].map((k) => this.history.back(k));
      const at = (k: number): AlphaSigma => alphaSigma(this.sigmas[k]!);
      let prevSample: tf.Tensor;
      if (order === 1) prevSample = this.firstOrder(m0!, sample, at(i + 1), at(i), noise);
      else if (order === 2) prevSample = this.secondOrder(m0!, m1!, sample, at(i + 1), at(i), at(i - 1), noise);
      else prevSample = this.thirdOrder(m0!, m1!, m2!, sample, at(i + 1), at(i), at(i - 1), at(i - 2));
      // DPM-Solver++ integrates x̂_0, so it is at hand for previews.
      return this.dataPrediction ? { prevSample, predOriginalSample: tf.clone(converted) } : { prevSample };
    });
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex.advance();
    return out;
  }

  /** DPM-Solver++ (ODE or SDE) integrates the data prediction x̂_0; DPM-Solver the noise prediction ε̂. */
  private get dataPrediction(): boolean {
    return this.config.algorithm_type === 'dpmsolver++' || this.config.algorithm_type === 'sde-dpmsolver++';
  }

  /**
   * First order (= DDIM): DPM-Solver++ eq. 7 with D = x̂_0; DPM-Solver eq. 3.7 with ε̂. SDE
   * variants: x_t = σ_t/σ_s·e^{−h}·x + α_t(1 − e^{−2h})·x̂_0 + σ_t√(1 − e^{−2h})·z, and
   * x_t = α_t/α_s·x − 2σ_t(e^h − 1)·ε̂ + σ_t√(e^{2h} − 1)·z.
   */
  private firstOrder(m0: tf.Tensor, sample: tf.Tensor, t: AlphaSigma, s0: AlphaSigma, noise?: tf.Tensor): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    switch (this.config.algorithm_type) {
      case 'dpmsolver++':
        return tf.sub(tf.mul(sample, f32(t.sigma / s0.sigma)), tf.mul(m0, f32(t.alpha * f32(f32(Math.exp(-h)) - 1))));
      case 'dpmsolver':
        return tf.sub(tf.mul(sample, f32(t.alpha / s0.alpha)), tf.mul(m0, f32(t.sigma * f32(f32(Math.exp(h)) - 1))));
      case 'sde-dpmsolver++': {
        const sde = sdeTerms(h, t, true);
        return tf.add(tf.add(tf.mul(sample, f32(f32(t.sigma / s0.sigma) * sde.decay)), tf.mul(m0, sde.c0)), tf.mul(noise!, sde.noise));
      }
      case 'sde-dpmsolver': {
        const sde = sdeTerms(h, t, false);
        return tf.add(tf.sub(tf.mul(sample, f32(t.alpha / s0.alpha)), tf.mul(m0, f32(2 * sde.c0))), tf.mul(noise!, sde.noise));
      }
    }
  }

  /**
   * Multistep second order: D1 = (m0 − m1)/r0 approximates the derivative (DPM-Solver++ Alg. 2).
   * The SDE variants weigh D0 = m0 and D1 with their first-order coefficients (midpoint: ½ of
   * D0's on D1; heun: the exact integral of the linear term) and add the same noise.
   */
  private secondOrder(m0: tf.Tensor, m1: tf.Tensor, sample: tf.Tensor, t: AlphaSigma, s0: AlphaSigma, s1: AlphaSigma, noise?: tf.Tensor): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    const d1 = tf.mul(tf.sub(m0, m1), f32(1 / r0));
    const heun = this.config.solver_type === 'heun';
    if (this.config.algorithm_type === 'sde-dpmsolver++') {
      const sde = sdeTerms(h, t, true);
      // heun: α_t·((1 − e^{−2h})/(−2h) + 1)
      const c1 = heun ? f32(t.alpha * f32(f32(sde.oneMinus / f32(-2 * h)) + 1)) : f32(0.5 * sde.c0);
      const x = tf.add(tf.mul(sample, f32(f32(t.sigma / s0.sigma) * sde.decay)), tf.mul(m0, sde.c0));
      return tf.add(tf.add(x, tf.mul(d1, c1)), tf.mul(noise!, sde.noise));
    }
    if (this.config.algorithm_type === 'sde-dpmsolver') {
      const sde = sdeTerms(h, t, false);
      // midpoint: σ_t(e^h − 1); heun: 2σ_t((e^h − 1)/h − 1)
      const c1 = heun ? f32(2 * f32(t.sigma * f32(f32(f32(f32(Math.exp(h)) - 1) / h) - 1))) : sde.c0;
      const x = tf.sub(tf.mul(sample, f32(t.alpha / s0.alpha)), tf.mul(m0, f32(2 * sde.c0)));
      return tf.add(tf.sub(x, tf.mul(d1, c1)), tf.mul(noise!, sde.noise));
    }
    if (this.config.algorithm_type === 'dpmsolver++') {
      const em1 = f32(f32(Math.exp(-h)) - 1);
      const c0 = f32(t.alpha * em1);
      const c1 = heun ? f32(t.alpha * f32(f32(em1 / h) + 1)) : f32(0.5 * c0);
      const x = tf.sub(tf.mul(sample, f32(t.sigma / s0.sigma)), tf.mul(m0, c0));
      return heun ? tf.add(x, tf.mul(d1, c1)) : tf.sub(x, tf.mul(d1, c1));
    }
    const ep1 = f32(f32(Math.exp(h)) - 1);
    const c0 = f32(t.sigma * ep1);
    const c1 = heun ? f32(t.sigma * f32(f32(ep1 / h) - 1)) : f32(0.5 * c0);
    return tf.sub(tf.sub(tf.mul(sample, f32(t.alpha / s0.alpha)), tf.mul(m0, c0)), tf.mul(d1, c1));
  }

  /** Multistep third order (DPM-Solver eq. 3.9 / DPM-Solver++ with D2 from three points). */
  private thirdOrder(
    m0: tf.Tensor,
    m1: tf.Tensor,
    m2: tf.Tensor,
    sample: tf.Tensor,
    t: AlphaSigma,
    s0: AlphaSigma,
    s1: AlphaSigma,
    s2: AlphaSigma,
  ): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const h1 = f32(s1.lambda - s2.lambda);
    const r0 = f32(h0 / h);
    const r1 = f32(h1 / h);
    const d10 = tf.mul(tf.sub(m0, m1), f32(1 / r0));
    const d11 = tf.mul(tf.sub(m1, m2), f32(1 / r1));
    const diff = tf.sub(d10, d11);
    const d1 = tf.add(d10, tf.mul(diff, f32(r0 / f32(r0 + r1))));
    const d2 = tf.mul(diff, f32(1 / f32(r0 + r1)));
    const h2 = f32(h * h);
    if (this.config.algorithm_type === 'dpmsolver++') {
      const em1 = f32(f32(Math.exp(-h)) - 1);
      const c1 = f32(t.alpha * f32(f32(em1 / h) + 1));
      const c2 = f32(t.alpha * f32(f32(f32(em1 + h) / h2) - 0.5));
      const x = tf.sub(tf.mul(sample, f32(t.sigma / s0.sigma)), tf.mul(m0, f32(t.alpha * em1)));
      return tf.sub(tf.add(x, tf.mul(d1, c1)), tf.mul(d2, c2));
    }
    const ep1 = f32(f32(Math.exp(h)) - 1);
    const c1 = f32(t.sigma * f32(f32(ep1 / h) - 1));
    const c2 = f32(t.sigma * f32(f32(f32(ep1 - h) / h2) - 0.5));
    const x = tf.sub(tf.mul(sample, f32(t.alpha / s0.alpha)), tf.mul(m0, f32(t.sigma * ep1)));
    return tf.sub(tf.sub(x, tf.mul(d1, c1)), tf.mul(d2, c2));
  }

  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return multistepAddNoise(this.timesteps, this.sigmas, original, noise, index);
  }

  setBeginIndex(index: number): void {
    this.stepIndex.begin(index);
  }

  dispose(): void {
    this.history.dispose();
  }
}

/**
 * Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast
 * Solver for Guided Sampling"), diffusers' DPMSolverMultistepScheduler. Stable Diffusion's
 * "DPM++ 2M" is algorithm_type 'dpmsolver++', solver_order 2. Orders 1–3 and the midpoint/heun
 * second-order variants are implemented; the SDE variants, Karras/Lu sigmas, thresholding and
 * learned variances are not.
 *
 * Symbols: α_t = 1/√(σ²+1), σ_t = σ·α_t, λ_t = log α_t − log σ_t (half log-SNR), h = λ_t − λ_s.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkInferenceSteps,
  indexForTimestep,
  timestepAt,
  noiseSchedule,
  schedulerConfigFor,
  trainingSigmas,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { f32, npArange, npInterp, npLinspace, roundHalfEven, sqrt32 } from './numerics.js';

interface AlphaSigma {
  alpha: number;
  sigma: number;
  lambda: number;
}

/** α_t, σ_t and λ_t of a noise level σ, in float32 op by op. */
function alphaSigma(sigma: number): AlphaSigma {
  const alpha = f32(1 / sqrt32(f32(f32(sigma * sigma) + 1)));
  const s = f32(sigma * alpha);
  return { alpha, sigma: s, lambda: f32(f32(Math.log(alpha)) - f32(Math.log(s))) };
}

export class DpmSolverMultistepScheduler implements Scheduler {
  readonly kind = 'dpm++2m' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  /** σ for each timestep, then the final σ (0 or σ_min). */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma = 1;
  readonly needsNoise = false;
  private stepIndex: number | undefined;
  /** Converted outputs (x̂_0 for ++, ε̂ otherwise) of the last `solver_order` steps, newest last. */
  private history: tf.Tensor[] = [];
  private lowerOrderNums = 0;
  private disposed = false;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'dpm++2m');
    const c = this.config;
    if (c.algorithm_type !== 'dpmsolver++' && c.algorithm_type !== 'dpmsolver') {
      throw unsupported('dpm++2m', `algorithm_type="${c.algorithm_type}"`, 'use "dpmsolver++"');
    }
    if (c.algorithm_type === 'dpmsolver' && c.final_sigmas_type === 'zero') {
      throw unsupported('dpm++2m', 'final_sigmas_type="zero" with algorithm_type="dpmsolver"', 'use "sigma_min"');
    }
    if (c.use_karras_sigmas) throw unsupported('dpm++2m', 'use_karras_sigmas=true', 'set it to false');
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
    const n = numInferenceSteps;
    let timesteps: number[];
    switch (c.timestep_spacing) {
      case 'linspace':
        timesteps = npLinspace(0, last - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
        break;
      case 'leading': {
        const ratio = Math.floor(last / (n + 1));
        timesteps = Array.from({ length: n }, (_, i) => (n - i) * ratio + c.steps_offset);
        break;
      }
      case 'trailing':
        timesteps = npArange(last, 0, -c.num_train_timesteps / n).map((t) => roundHalfEven(t) - 1);
        break;
    }
    this.timesteps = timesteps;
    const table = trainingSigmas(alphasCumprod);
    const grid = Array.from({ length: table.length }, (_, i) => i);
    const sigmaLast = c.final_sigmas_type === 'zero' ? 0 : table[0]!;
    this.sigmas = Float32Array.from([...timesteps.map((t) => npInterp(t, grid, table)), sigmaLast]);
  }

  /** The sampler works on the unscaled sample: the input is returned as is (a new tensor). */
  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): StepOutput {
    if (this.disposed) throw new Error('dpm++2m: step() after dispose()');
    const c = this.config;
    if (this.stepIndex === undefined) this.stepIndex = indexForTimestep(this.timesteps, t) ?? this.timesteps.length - 1;
    const i = this.stepIndex;
    const steps = this.timesteps.length;
    if (i >= steps) throw new Error('dpm++2m: step() past the last timestep');
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
      const converted = tf.keep(this.convertModelOutput(modelOutput, sample, this.sigmas[i]!));
      this.history.push(converted);
      while (this.history.length > c.solver_order) this.history.shift()!.dispose();
      // m0 is this step's converted output, m1 and m2 those of the steps before.
      const [m0, m1, m2] = [1, 2, 3].map((k) => this.history[this.history.length - k]);
      const at = (k: number): AlphaSigma => alphaSigma(this.sigmas[k]!);
      let prevSample: tf.Tensor;
      if (order === 1) prevSample = this.firstOrder(m0!, sample, at(i + 1), at(i));
      else if (order === 2) prevSample = this.secondOrder(m0!, m1!, sample, at(i + 1), at(i), at(i - 1));
      else prevSample = this.thirdOrder(m0!, m1!, m2!, sample, at(i + 1), at(i), at(i - 1), at(i - 2));
      // DPM-Solver++ integrates x̂_0, so it is at hand for previews.
      return c.algorithm_type === 'dpmsolver++' ? { prevSample, predOriginalSample: tf.clone(converted) } : { prevSample };
    });
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    return out;
  }

  /** DPM-Solver++ integrates the data prediction x̂_0; DPM-Solver the noise prediction ε̂. */
  private convertModelOutput(modelOutput: tf.Tensor, sample: tf.Tensor, sigma: number): tf.Tensor {
    const { alpha, sigma: s } = alphaSigma(sigma);
    const type = this.config.prediction_type;
    if (this.config.algorithm_type === 'dpmsolver++') {
      if (type === 'epsilon') return tf.div(tf.sub(sample, tf.mul(modelOutput, s)), alpha);
      if (type === 'sample') return tf.clone(modelOutput);
      return tf.sub(tf.mul(sample, alpha), tf.mul(modelOutput, s));
    }
    if (type === 'epsilon') return tf.clone(modelOutput);
    if (type === 'sample') return tf.div(tf.sub(sample, tf.mul(modelOutput, alpha)), s);
    return tf.add(tf.mul(modelOutput, alpha), tf.mul(sample, s));
  }

  /** First order (= DDIM): DPM-Solver++ eq. 7 with D = x̂_0; DPM-Solver eq. 3.7 with ε̂. */
  private firstOrder(m0: tf.Tensor, sample: tf.Tensor, t: AlphaSigma, s0: AlphaSigma): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    if (this.config.algorithm_type === 'dpmsolver++') {
      return tf.sub(tf.mul(sample, f32(t.sigma / s0.sigma)), tf.mul(m0, f32(t.alpha * f32(f32(Math.exp(-h)) - 1))));
    }
    return tf.sub(tf.mul(sample, f32(t.alpha / s0.alpha)), tf.mul(m0, f32(t.sigma * f32(f32(Math.exp(h)) - 1))));
  }

  /** Multistep second order: D1 = (m0 − m1)/r0 approximates the derivative (DPM-Solver++ Alg. 2). */
  private secondOrder(m0: tf.Tensor, m1: tf.Tensor, sample: tf.Tensor, t: AlphaSigma, s0: AlphaSigma, s1: AlphaSigma): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    const d1 = tf.mul(tf.sub(m0, m1), f32(1 / r0));
    const heun = this.config.solver_type === 'heun';
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

  /** α_t·x_0 + σ_t·ε with α_t = 1/√(σ²+1), σ_t = σ·α_t at σ = sigmas[index]. */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    timestepAt(this.timesteps, index);
    const { alpha, sigma } = alphaSigma(this.sigmas[index]!);
    return tf.tidy(() => tf.add(tf.mul(original, alpha), tf.mul(noise, sigma)));
  }

  setBeginIndex(index: number): void {
    timestepAt(this.timesteps, index);
    this.stepIndex = index;
  }

  dispose(): void {
    for (const m of this.history) m.dispose();
    this.history = [];
    this.disposed = true;
  }
}

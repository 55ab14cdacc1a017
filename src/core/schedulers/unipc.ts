/**
 * UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
 * Diffusion Models"), diffusers' UniPCMultistepScheduler. Each step first corrects the sample the
 * previous step predicted, using the model output at that sample (UniC, §3.1: it raises the order
 * by one at no extra model evaluation), then predicts the next sample from the last `order`
 * outputs (UniP, §3.2), both in the B(h) form of §3.3 (bh1: B(h) = h, bh2: B(h) = e^h − 1).
 *
 * Symbols as in DPM-Solver: α_t = 1/√(σ²+1), σ_t = σ·α_t, λ_t = log α_t − log σ_t (half
 * log-SNR), h = λ_t − λ_s. With predict_x0 the solver integrates the data prediction x̂_0 (the
 * "UniPC-p with data prediction" of Appendix B) and hh = −h; otherwise the noise prediction ε̂
 * and hh = h. Scalars follow diffusers' float32 torch ops one by one.
 */
import * as tf from '@tensorflow/tfjs';
import {
  noiseSchedule,
  schedulerConfigFor,
  unsupported,
  type NoiseSchedule,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
} from './common.js';
import { alphaSigma, convertModelOutput, multistepAddNoise, multistepSigmaSteps, OutputHistory, type AlphaSigma } from './multistep-solver.js';
import { f32 } from './numerics.js';
import { sigmaSpacingOf } from './sigma-schedules.js';
import { StepIndex } from './step-index.js';

/**
 * Solves R·ρ = b for the small (≤ 3×3) systems of the UniPC coefficients: Gaussian elimination
 * with partial pivoting in double precision, each ρ rounded to float32 (diffusers solves in
 * float32 with torch.linalg.solve; the two agree to about one float32 ulp).
 */
function solveSmall(matrix: readonly (readonly number[])[], rhs: readonly number[]): number[] {
  const n = rhs.length;
  const a = matrix.map((row, i) => [...row, rhs[i]!]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(a[r]![col]!) > Math.abs(a[pivot]![col]!)) pivot = r;
    [a[col], a[pivot]] = [a[pivot]!, a[col]!];
    for (let r = col + 1; r < n; r++) {
      const f = a[r]![col]! / a[col]![col]!;
      for (let c = col; c <= n; c++) a[r]![c]! -= f * a[col]![c]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = a[r]![n]!;
    for (let c = r + 1; c < n; c++) s -= a[r]![c]! * x[c]!;
    x[r] = s / a[r]![r]!;
  }
  return x.map(f32);
}

/** Σ_k ρ_k·D_k over the (one or two) difference terms. */
function weightedSum(d: readonly tf.Tensor[], rho: readonly number[]): tf.Tensor {
  return d.slice(1).reduce((acc, dk, j) => tf.add(acc, tf.mul(dk, rho[j + 1]!)), tf.mul(d[0]!, rho[0]!));
}

/** The scalars of one UniP or UniC update from s0 to t. */
interface BhCoefficients {
  /** σ_t/σ_s0 (x̂_0 form) or α_t/α_s0 (ε̂ form): the factor on the sample. */
  sampleScale: number;
  /** α_t·hφ_1(hh) (x̂_0 form) or σ_t·hφ_1(hh) (ε̂ form): the factor on m0, hφ_1(hh) = e^hh − 1. */
  m0Scale: number;
  /** α_t·B(h) or σ_t·B(h): the factor on the higher-order terms. */
  bhScale: number;
  /** b_k = hφ_k(hh)·k!/B(h), k = 1 … order (eq. 8's right-hand side). */
  b: number[];
}

export class UniPcMultistepScheduler implements Scheduler {
  readonly kind = 'unipc' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  /** σ for each timestep, then the final σ (0 or σ_min). */
  readonly sigmas: Float32Array;
  readonly initNoiseSigma = 1;
  readonly needsNoise = false;
  private readonly stepIndex: StepIndex;
  /** Converted outputs (x̂_0 or ε̂) of the last `solver_order` steps. */
  private readonly history: OutputHistory;
  /** The sample the last predictor started from (x_{t_{i−1}}), for this step's corrector. */
  private lastSample: tf.Tensor | undefined;
  /** The order of the last predictor, which its corrector matches. */
  private lastOrder = 0;
  private lowerOrderNums = 0;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'unipc');
    const c = this.config;
    if (c.solver_p !== null) throw unsupported('unipc', `solver_p="${c.solver_p}"`, 'set it to null');
    if (c.thresholding) throw unsupported('unipc', 'thresholding=true', 'set it to false');
    const spacing = sigmaSpacingOf('unipc', c);
    // ε̂ integration to σ = 0 multiplies e^h = ∞ by 0 (diffusers returns NaN there).
    if (!c.predict_x0 && c.final_sigmas_type === 'zero') {
      throw unsupported('unipc', 'final_sigmas_type="zero" with predict_x0=false', 'use "sigma_min"');
    }
    // A multistep final step to σ = 0 divides by r_k = 0 (diffusers returns NaN or ∞ there).
    if (!c.lower_order_final && c.solver_order > 1 && c.final_sigmas_type === 'zero') {
      throw unsupported('unipc', 'lower_order_final=false with final_sigmas_type="zero"', 'set lower_order_final to true');
    }
    this.schedule = noiseSchedule(c, { finiteTerminalSigma: true });
    ({ timesteps: this.timesteps, sigmas: this.sigmas } = multistepSigmaSteps(c, this.schedule, numInferenceSteps, spacing));
    this.stepIndex = new StepIndex('unipc', this.timesteps, 'last');
    this.history = new OutputHistory('unipc', c.solver_order);
  }

  /** The solver works on the unscaled sample: the input is returned as is (a new tensor). */
  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): StepOutput {
    this.history.throwIfDisposed();
    const c = this.config;
    const i = this.stepIndex.forStep(t);
    const steps = this.timesteps.length;
    const useCorrector = i > 0 && !c.disable_corrector.includes(i - 1) && this.lastSample !== undefined;
    // Fewer history points near the end steady few-step sampling; the first steps warm up.
    const order = Math.min(c.lower_order_final ? Math.min(c.solver_order, steps - i) : c.solver_order, this.lowerOrderNums + 1);

    const out = tf.tidy(() => {
      const converted = convertModelOutput(c.prediction_type, c.predict_x0, modelOutput, sample, this.sigmas[i]!);
      // UniC: x_{t_i} corrected with the model output at the predicted x_{t_i} itself.
      const x = useCorrector ? this.correct(converted, this.lastSample!, i, this.lastOrder) : sample;
      this.history.push(converted);
      this.lastSample?.dispose();
      this.lastSample = tf.keep(tf.clone(x));
      // UniP: x_{t_{i+1}} predicted from x_{t_i}.
      const prevSample = this.predict(x, i, order);
      return c.predict_x0 ? { prevSample, predOriginalSample: tf.clone(converted) } : { prevSample };
    });
    this.lastOrder = order;
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex.advance();
    return out;
  }

  /**
   * The B(h) coefficients of one update from s0 to t (§3.3 and diffusers' loop):
   * hφ_1 = e^hh − 1, hφ_{k+1} = hφ_k/hh − 1/(k+1)! starting from hφ_1/hh − 1, b_k = hφ_k·k!/B(h).
   */
  private coefficients(t: AlphaSigma, s0: AlphaSigma, order: number): BhCoefficients {
    const h = f32(t.lambda - s0.lambda);
    const x0 = this.config.predict_x0;
    const hh = x0 ? -h : h;
    const hPhi1 = f32(Math.expm1(hh));
    const bh = this.config.solver_type === 'bh1' ? hh : f32(Math.expm1(hh));
    let hPhiK = f32(f32(hPhi1 / hh) - 1);
    let factorial = 1;
    const b: number[] = [];
    for (let k = 1; k <= order; k++) {
      b.push(f32(f32(hPhiK * factorial) / bh));
      factorial *= k + 1;
      hPhiK = f32(f32(hPhiK / hh) - f32(1 / factorial));
    }
    return {
      sampleScale: x0 ? f32(t.sigma / s0.sigma) : f32(t.alpha / s0.alpha),
      m0Scale: f32((x0 ? t.alpha : t.sigma) * hPhi1),
      bhScale: f32((x0 ? t.alpha : t.sigma) * bh),
      b,
    };
  }

  /** r_k = (λ_{s_k} − λ_{s0})/h and D_k = (m_k − m0)/r_k for the k = 1 … order−1 older outputs. */
  private differences(m0: tf.Tensor, older: readonly tf.Tensor[], lambdas: readonly number[], s0: AlphaSigma, h: number): { r: number[]; d: tf.Tensor[] } {
    const r = lambdas.map((l) => f32(f32(l - s0.lambda) / h));
    return { r, d: older.map((m, k) => tf.div(tf.sub(m, m0), r[k]!)) };
  }

  /** The rows R_j = r^(j−1) of the Vandermonde-like system of eq. 8, with r = [r_1 … r_{p−1}, 1]. */
  private static vandermonde(r: readonly number[], size: number): number[][] {
    const rks = [...r, 1];
    return Array.from({ length: size }, (_, j) => rks.slice(0, size).map((v) => f32(v ** j)));
  }

  /**
   * UniP-p (Algorithm 2's predictor): x_t = σ_t/σ_s0·x − α_t·hφ_1·m0 − α_t·B(h)·Σ ρ_k·D_k with
   * ρ solving eq. 8 on the p−1 older outputs (ρ = ½ at order 2). ε̂ form: α for σ and back.
   */
  private predict(x: tf.Tensor, i: number, order: number): tf.Tensor {
    const t = alphaSigma(this.sigmas[i + 1]!);
    const s0 = alphaSigma(this.sigmas[i]!);
    const k = this.coefficients(t, s0, order);
    const m0 = this.history.back(0)!;
    const base = tf.sub(tf.mul(x, k.sampleScale), tf.mul(m0, k.m0Scale));
    // At order 1 there is no correction term (diffusers multiplies B(h) = −∞ by 0 for bh1 to σ = 0).
    if (order === 1) return base;
    const older = Array.from({ length: order - 1 }, (_, j) => this.history.back(j + 1)!);
    const lambdas = older.map((_, j) => alphaSigma(this.sigmas[i - 1 - j]!).lambda);
    const { r, d } = this.differences(m0, older, lambdas, s0, f32(t.lambda - s0.lambda));
    const rho = order === 2 ? [0.5] : solveSmall(UniPcMultistepScheduler.vandermonde(r, order - 1), k.b.slice(0, order - 1));
    return tf.sub(base, tf.mul(weightedSum(d, rho), k.bhScale));
  }

  /**
   * UniC-p (Algorithm 2's corrector) of the step from t_{i−1} to t_i: the same update started
   * again from x_{t_{i−1}}, now with D_t = m_t − m0 from the model output m_t at the predicted
   * x_{t_i}: x_t = σ_t/σ_s0·x − α_t·hφ_1·m0 − α_t·B(h)·(Σ ρ_k·D_k + ρ_p·D_t), ρ from the full
   * p×p system (ρ = ½ at order 1).
   */
  private correct(modelT: tf.Tensor, x: tf.Tensor, i: number, order: number): tf.Tensor {
    const t = alphaSigma(this.sigmas[i]!);
    const s0 = alphaSigma(this.sigmas[i - 1]!);
    const k = this.coefficients(t, s0, order);
    const m0 = this.history.back(0)!;
    const older = Array.from({ length: order - 1 }, (_, j) => this.history.back(j + 1)!);
    const lambdas = older.map((_, j) => alphaSigma(this.sigmas[i - 2 - j]!).lambda);
    const { r, d } = this.differences(m0, older, lambdas, s0, f32(t.lambda - s0.lambda));
    const rho = order === 1 ? [0.5] : solveSmall(UniPcMultistepScheduler.vandermonde(r, order), k.b);
    const dT = tf.mul(tf.sub(modelT, m0), rho[order - 1]!);
    const res = d.length > 0 ? tf.add(weightedSum(d, rho), dT) : dT;
    const base = tf.sub(tf.mul(x, k.sampleScale), tf.mul(m0, k.m0Scale));
    return tf.sub(base, tf.mul(res, k.bhScale));
  }

  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return multistepAddNoise(this.timesteps, this.sigmas, original, noise, index);
  }

  setBeginIndex(index: number): void {
    this.stepIndex.begin(index);
  }

  dispose(): void {
    this.history.dispose();
    this.lastSample?.dispose();
    this.lastSample = undefined;
  }
}

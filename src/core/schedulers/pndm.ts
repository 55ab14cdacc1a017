/**
 * PNDM's pseudo linear multistep sampler, PLMS (Liu et al. 2022, "Pseudo Numerical Methods for
 * Diffusion Models on Manifolds"), as diffusers' PNDMScheduler runs it with skip_prk_steps —
 * Stable Diffusion's default. The Runge–Kutta warm-up (skip_prk_steps false) is not implemented:
 * like diffusers, the first step is a pseudo improved-Euler step instead, which is why the
 * second timestep appears twice.
 */
import * as tf from '@tensorflow/tfjs';
import {
  alphaCumprodAt,
  noiseSchedule,
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

export class PndmScheduler implements Scheduler {
  readonly kind = 'pndm' as const;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly timesteps: readonly number[];
  readonly initNoiseSigma = 1;
  readonly needsNoise = false;
  private readonly stride: number;
  private readonly finalAlphaCumprod: number;
  /** ε history, newest last (at most 4: the 4th-order formula reads all). */
  private ets: tf.Tensor[] = [];
  /** x_t of the first step, which the repeated second step restarts from. */
  private curSample: tf.Tensor | null = null;
  private counter = 0;

  constructor(config: SchedulerConfig, numInferenceSteps: number) {
    this.config = schedulerConfigFor(config, 'pndm');
    const c = this.config;
    if (!c.skip_prk_steps) throw unsupported('pndm', 'skip_prk_steps=false (Runge–Kutta warm-up)', 'set "skip_prk_steps": true');
    if (c.prediction_type === 'sample') throw unsupported('pndm', 'prediction_type="sample"', 'use "epsilon" or "v_prediction"');
    this.schedule = noiseSchedule(c);
    this.stride = Math.floor(c.num_train_timesteps / numInferenceSteps);
    this.finalAlphaCumprod = c.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
    // Ascending spacing, then [t_0 … t_{n−2}, t_{n−2}, t_{n−1}] reversed.
    const ascending = spacedTimesteps(c, numInferenceSteps).reverse();
    this.timesteps = [...ascending.slice(0, -1), ...ascending.slice(-2, -1), ...ascending.slice(-1)].reverse();
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return tf.clone(sample);
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): StepOutput {
    if (this.counter < 0) throw new Error('pndm: step() after dispose()');
    let from = t;
    let to = t - this.stride;
    const prevSample = tf.tidy(() => {
      let eps: tf.Tensor;
      let x = sample;
      if (this.counter !== 1) {
        while (this.ets.length > 3) this.ets.shift()!.dispose();
        this.ets.push(tf.keep(tf.clone(modelOutput)));
      } else {
        // The repeated timestep: step again from the first x_t, over the same interval.
        to = t;
        from = t + this.stride;
      }
      const e = this.ets;
      const n = e.length;
      if (n === 1 && this.counter === 0) {
        eps = modelOutput;
        this.curSample = tf.keep(tf.clone(sample));
      } else if (n === 1 && this.counter === 1) {
        // pseudo improved Euler: mean of the two slopes
        eps = tf.div(tf.add(modelOutput, e[0]!), 2);
        x = this.curSample!;
      } else if (n === 2) {
        eps = tf.div(tf.sub(tf.mul(e[1]!, 3), e[0]!), 2);
      } else if (n === 3) {
        eps = tf.div(tf.add(tf.sub(tf.mul(e[2]!, 23), tf.mul(e[1]!, 16)), tf.mul(e[0]!, 5)), 12);
      } else {
        // 4th-order linear multistep (PNDM eq. 12)
        const sum = tf.sub(tf.add(tf.sub(tf.mul(e[3]!, 55), tf.mul(e[2]!, 59)), tf.mul(e[1]!, 37)), tf.mul(e[0]!, 9));
        eps = tf.mul(sum, 1 / 24);
      }
      return this.transfer(x, from, to, eps);
    });
    if (this.counter === 1) {
      this.curSample?.dispose();
      this.curSample = null;
    }
    this.counter++;
    return { prevSample };
  }

  /**
   * PNDM's transfer φ(x_t, ε, t, t−δ) (eq. 11): x_{t−δ} = √(ᾱ_{t−δ}/ᾱ_t)·x_t
   * − (ᾱ_{t−δ} − ᾱ_t)/(ᾱ_t√(1−ᾱ_{t−δ}) + √((1−ᾱ_t)ᾱ_tᾱ_{t−δ}))·ε.
   */
  private transfer(sample: tf.Tensor, t: number, prevT: number, modelOutput: tf.Tensor): tf.Tensor {
    const acpT = alphaCumprodAt(this.schedule, t);
    const acpPrev = prevT >= 0 ? alphaCumprodAt(this.schedule, prevT) : this.finalAlphaCumprod;
    const betaProdT = f32(1 - acpT);
    const betaProdPrev = f32(1 - acpPrev);
    let eps = modelOutput;
    if (this.config.prediction_type === 'v_prediction') {
      eps = tf.add(tf.mul(modelOutput, sqrt32(acpT)), tf.mul(sample, sqrt32(betaProdT)));
    }
    const sampleCoeff = sqrt32(f32(acpPrev / acpT));
    const denom = f32(f32(acpT * sqrt32(betaProdPrev)) + sqrt32(f32(f32(acpT * betaProdT) * acpPrev)));
    return tf.sub(tf.mul(sample, sampleCoeff), tf.div(tf.mul(eps, f32(acpPrev - acpT)), denom));
  }

  /** √ᾱ_t·x_0 + √(1−ᾱ_t)·ε at t = timesteps[index]. */
  addNoise(original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    return addNoise(this.schedule, original, noise, timestepAt(this.timesteps, index));
  }

  /** PLMS counts the steps it has run, from wherever the loop starts (diffusers has no begin index for it). */
  setBeginIndex(index: number): void {
    timestepAt(this.timesteps, index);
  }

  dispose(): void {
    for (const e of this.ets) e.dispose();
    this.ets = [];
    this.curSample?.dispose();
    this.curSample = null;
    this.counter = -1;
  }
}

/**
 * AdamW (Loshchilov & Hutter 2019, as torch.optim.AdamW) with the update of each weight fused
 * into one kernel on the wasm and cpu backends: tf.train.adam plus decoupled decay is ~15 small
 * ops per weight tensor, which for a UNet's hundreds of tensors costs more in per-op overhead
 * than in arithmetic. On other backends (tensorflow) the same update runs as tf ops.
 *
 *   p ← p·(1 − lr·λ)
 *   m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²
 *   p ← p − lr·m̂/(√v̂ + ε),  m̂ = m/(1 − β₁ᵗ),  v̂ = v/(1 − β₂ᵗ)
 */
import * as tf from '@tensorflow/tfjs';
import { hasKernel, registerJsKernel, runKernel, type JsKernel } from './js-kernel.js';

export const ADAMW = 'PainterAdamW';

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay λ (torch default 0.01). */
  weightDecay?: number;
}

export interface Hyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

const adamwKernel: JsKernel = {
  name: ADAMW,
  inputs: ['param', 'grad', 'm', 'v'],
  outputShapes: ([s]) => [s!, s!, s!],
  compute([p, g, m, v], [p2, m2, v2], _shapes, attrs) {
    const { lr, beta1, beta2, eps, weightDecay, step } = attrs as unknown as Hyper;
    const keep = 1 - lr * weightDecay;
    const c1 = 1 - beta1;
    const c2 = 1 - beta2;
    const stepSize = lr / (1 - beta1 ** step);
    const rootBc2 = Math.sqrt(1 - beta2 ** step);
    for (let i = 0; i < p!.length; i++) {
      const gi = g![i]!;
      const mi = beta1 * m![i]! + c1 * gi;
      const vi = beta2 * v![i]! + c2 * gi * gi;
      m2![i] = mi;
      v2![i] = vi;
      p2![i] = p![i]! * keep - (stepSize * mi) / (Math.sqrt(vi) / rootBc2 + eps);
    }
  },
};

/** The same update as tf ops (backends without the kernel). */
function adamwOps(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, h: Hyper): tf.Tensor[] {
  return tf.tidy(() => {
    const m2 = tf.add(tf.mul(m, h.beta1), tf.mul(g, 1 - h.beta1));
    const v2 = tf.add(tf.mul(v, h.beta2), tf.mul(tf.square(g), 1 - h.beta2));
    const denom = tf.add(tf.div(tf.sqrt(v2), Math.sqrt(1 - h.beta2 ** h.step)), h.eps);
    const p2 = tf.sub(tf.mul(p, 1 - h.lr * h.weightDecay), tf.mul(tf.div(m2, denom), h.lr / (1 - h.beta1 ** h.step)));
    return [p2, m2, v2];
  });
}

export function registerFusedAdamW(): void {
  registerJsKernel(adamwKernel);
}

/**
 * One AdamW update of a single weight (torch.optim.AdamW order), fused into one kernel on the
 * CPU backends and plain tf ops elsewhere. Returns the new weight and moments; `step` is t ≥ 1.
 */
export function adamWUpdate(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, h: Hyper): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    const gf = g.dtype === 'float32' ? g : g.toFloat();
    const out = hasKernel(ADAMW) ? runKernel(ADAMW, { param: p, grad: gf, m, v }, { ...h }) : adamwOps(p, gf, m, v, h);
    return [out[0]!, out[1]!, out[2]!];
  });
}

export class AdamW {
  private readonly moments = new Map<string, { m: tf.Tensor; v: tf.Tensor }>();
  private step = 0;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly weightDecay: number;

  constructor(private readonly opts: AdamWOptions) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
  }

  /** One update of every variable that has a gradient (grads keyed by variable name); `lr` overrides the rate. */
  applyGradients(vars: tf.Variable[], grads: tf.NamedTensorMap, lr = this.opts.lr): void {
    this.step++;
    const h: Hyper = { lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay, step: this.step };
    for (const variable of vars) {
      const g = grads[variable.name];
      if (!g) continue;
      let state = this.moments.get(variable.name);
      if (!state) {
        state = { m: tf.keep(tf.zerosLike(variable)), v: tf.keep(tf.zerosLike(variable)) };
        this.moments.set(variable.name, state);
      }
      const [p2, m2, v2] = adamWUpdate(variable, g, state.m, state.v, h);
      variable.assign(p2!);
      p2!.dispose();
      state.m.dispose();
      state.v.dispose();
      state.m = tf.keep(m2!);
      state.v = tf.keep(v2!);
    }
  }

  /** Steps taken so far (t in the bias corrections). */
  get iterations(): number {
    return this.step;
  }

  dispose(): void {
    for (const s of this.moments.values()) tf.dispose([s.m, s.v]);
    this.moments.clear();
  }
}

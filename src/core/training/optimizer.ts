/**
 * AdamW (Loshchilov & Hutter 2019) with PyTorch's update order, global-norm gradient clipping,
 * and learning-rate schedules. The state is plain tensors plus a step count, so checkpoints can
 * store it and a resumed run continues bit-exactly.
 */
import * as tf from '@tensorflow/tfjs';
import { adamWUpdate } from '../../backend/fused-adamw.js';

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWConfig, 'lr'> = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 };

export interface AdamWState {
  step: number;
  /** First and second moment per trainable weight name. */
  m: Map<string, tf.Tensor>;
  v: Map<string, tf.Tensor>;
}

export function createAdamWState(vars: Map<string, tf.Variable>): AdamWState {
  const m = new Map<string, tf.Tensor>();
  const v = new Map<string, tf.Tensor>();
  for (const [k, t] of vars) {
    m.set(k, tf.keep(tf.zerosLike(t)));
    v.set(k, tf.keep(tf.zerosLike(t)));
  }
  return { step: 0, m, v };
}

export function disposeAdamWState(s: AdamWState): void {
  for (const t of [...s.m.values(), ...s.v.values()]) t.dispose();
  s.m.clear();
  s.v.clear();
}

/**
 * One AdamW update at learning rate `lr` (torch.optim.AdamW; `lrScale` gives a variable's own
 * multiple of it, as a parameter group with its own lr):
 * θ ← θ(1 − lr·λ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
 * θ ← θ − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε).
 */
export function adamWStep(vars: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>, state: AdamWState, cfg: AdamWConfig, lr: number, lrScale?: (key: string) => number): void {
  state.step += 1;
  const t = state.step;
  for (const [k, p] of vars) {
    const g = grads.get(k);
    if (!g) continue;
    const [next, m, v] = adamWUpdate(p, g, state.m.get(k)!, state.v.get(k)!, {
      lr: lrScale ? lr * lrScale(k) : lr,
      beta1: cfg.beta1,
      beta2: cfg.beta2,
      eps: cfg.eps,
      weightDecay: cfg.weightDecay,
      step: t,
    });
    state.m.get(k)!.dispose();
    state.v.get(k)!.dispose();
    state.m.set(k, tf.keep(m));
    state.v.set(k, tf.keep(v));
    p.assign(next);
    next.dispose();
  }
}

/** Global L2 norm of all gradients (read back asynchronously: a GPU backend's queue never blocks). */
export async function globalNorm(grads: Map<string, tf.Tensor>): Promise<number> {
  if (grads.size === 0) return 0;
  const total = tf.tidy(() => tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g)))));
  try {
    return Math.sqrt((await total.data())[0]!);
  } finally {
    total.dispose();
  }
}

/**
 * Clips gradients in place to a global norm of at most `maxNorm` (torch.nn.utils.clip_grad_norm_:
 * scale by maxNorm/(norm + 1e-6) when norm exceeds it). Returns the norm before clipping.
 */
export async function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number): Promise<number> {
  const norm = await globalNorm(grads);
  if (maxNorm > 0 && norm > maxNorm) {
    const scale = maxNorm / (norm + 1e-6);
    for (const [k, g] of grads) {
      grads.set(k, tf.mul(g, scale));
      g.dispose();
    }
  }
  return norm;
}

export type LrSchedule = 'constant' | 'cosine' | 'linear';

/**
 * Learning rate at optimisation step `step` (0-based) of `total`, with linear warmup, exactly as
 * diffusers' get_scheduler lambdas (so step 0 of a warmup runs at lr 0):
 * constant_with_warmup, cosine (half a cycle to 0), linear (to 0).
 */
export function learningRate(base: number, schedule: LrSchedule, step: number, total: number, warmup: number): number {
  if (step < warmup) return (base * step) / Math.max(1, warmup);
  switch (schedule) {
    case 'constant':
      return base;
    case 'cosine': {
      const progress = (step - warmup) / Math.max(1, total - warmup);
      return base * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
    }
    case 'linear':
      return base * Math.max(0, (total - step) / Math.max(1, total - warmup));
  }
}

/**
 * An exponential moving average of the trained weights, as diffusers' EMAModel (training_utils.py)
 * keeps it for its training scripts' --use_ema: a shadow copy θ̄ of every trained variable, after
 * optimisation step n updated as
 *   θ̄ ← θ̄ − (1 − d_n)·(θ̄ − θ),   d_n = min(decay, (1 + k)/(10 + k)),  k = n − 1
 * (d_1 = 0, so the first update copies the weights; EMAModel's default warm-up without
 * use_ema_warmup, update_after_step 0 and min_decay 0). Computed in float32 operation by operation
 * as PyTorch's in-place update is. The shadow is part of every checkpoint, so resume stays exact.
 */
import * as tf from '@tensorflow/tfjs';

/** d_n of EMAModel.get_decay for optimisation step n (1-based). */
export function emaDecay(decay: number, n: number): number {
  const k = n - 1;
  if (k <= 0) return 0;
  return Math.min(decay, (1 + k) / (10 + k));
}

let created = 0;

export class WeightEma {
  readonly shadow = new Map<string, tf.Variable>();

  constructor(
    vars: ReadonlyMap<string, tf.Variable>,
    readonly decay: number,
  ) {
    // EMAModel starts from a copy of the weights it follows.
    const id = ++created;
    for (const [k, v] of vars) {
      const copy = v.clone();
      this.shadow.set(k, tf.variable(copy, false, `ema${id}_${v.name}`));
      copy.dispose();
    }
  }

  /** The update after optimisation step n. */
  update(vars: ReadonlyMap<string, tf.Variable>, n: number): void {
    const oneMinus = 1 - emaDecay(this.decay, n);
    tf.tidy(() => {
      for (const [k, v] of vars) {
        const s = this.shadow.get(k)!;
        s.assign(tf.sub(s, tf.mul(tf.sub(s, v), oneMinus)));
      }
    });
  }

  /**
   * Runs `fn` with the EMA weights in the trained variables (validation samples, the EMA result),
   * then puts the trained weights back, also when `fn` throws.
   */
  async swapIn<T>(vars: ReadonlyMap<string, tf.Variable>, fn: () => Promise<T>): Promise<T> {
    const saved = new Map<string, tf.Tensor>();
    for (const [k, v] of vars) {
      saved.set(k, v.clone());
      v.assign(this.shadow.get(k)!);
    }
    try {
      return await fn();
    } finally {
      for (const [k, v] of vars) v.assign(saved.get(k)!);
      tf.dispose([...saved.values()]);
    }
  }

  dispose(): void {
    for (const s of this.shadow.values()) s.dispose();
    this.shadow.clear();
  }
}

/**
 * Trainable LoRA adapters (Hu et al. 2021) for DreamBooth-LoRA, on the modules diffusers'
 * train_dreambooth_lora.py adapts: the UNet's attention projections attn1/attn2 to_q, to_k, to_v,
 * to_out.0 and, with text-encoder training, CLIP's self_attn q/k/v/out_proj.
 *
 * Initialisation as peft's LoraConfig(init_lora_weights="gaussian") that script uses:
 * down ~ N(0, (1/r)²), up = 0, so training starts exactly at the base model. In the forward pass
 * the adapted weight is W' = W + (α/r)·down@up (eq. 3), built inside the loss closure so that
 * gradients reach only down and up; the base weights stay plain tensors (no optimizer state).
 */
import * as tf from '@tensorflow/tfjs';
import { LORA_TARGETS, loraDelta, type LoraAdapter, type LoraComponent } from '../core/lora.js';
import type { Params } from '../core/params.js';
import type { Rng } from '../core/random.js';

export interface TrainableAdapter {
  component: LoraComponent;
  /** Module path as diffusers/transformers name it; the adapted weight is `${module}.weight`. */
  module: string;
  /** [in, r] (tfjs layout of Linear(in → r)). */
  down: tf.Variable;
  /** [r, out]. */
  up: tf.Variable;
}

export interface TrainableLora {
  rank: number;
  alpha: number;
  adapters: TrainableAdapter[];
  dispose(): void;
}

/** Weight keys of a component that LoRA adapts, in a fixed (sorted) order. */
export function loraTargetKeys(params: Params, component: LoraComponent): string[] {
  return [...params.keys()].filter((k) => LORA_TARGETS[component].test(k) && params.get(k)!.rank === 2).sort();
}

let created = 0;

/** Adapters for every target weight of the given components, drawn from `rng`. */
export function createTrainableLora(components: { component: LoraComponent; params: Params }[], rank: number, alpha: number, rng: Rng): TrainableLora {
  if (!Number.isInteger(rank) || rank < 1) throw new RangeError(`LoRA rank must be a positive integer (got ${rank})`);
  if (!(alpha > 0)) throw new RangeError(`LoRA alpha must be positive (got ${alpha})`);
  // Variable names are global in tfjs; a per-setup prefix keeps two setups apart.
  const prefix = `lora${++created}_${Date.now()}`;
  const adapters: TrainableAdapter[] = [];
  for (const { component, params } of components) {
    for (const key of loraTargetKeys(params, component)) {
      const [inF, outF] = params.get(key)!.shape as [number, number];
      const module = key.slice(0, -'.weight'.length);
      const down = tf.tensor2d(rng.normals(inF * rank).map((v) => v / rank), [inF, rank]);
      const up = tf.zeros([rank, outF]);
      adapters.push({
        component,
        module,
        down: tf.variable(down, true, `${prefix}/${component}/${module}.down`),
        up: tf.variable(up, true, `${prefix}/${component}/${module}.up`),
      });
      // The variables hold their own reference to the data.
      tf.dispose([down, up]);
    }
  }
  return {
    rank,
    alpha,
    adapters,
    dispose() {
      for (const a of adapters) tf.dispose([a.down, a.up]);
    },
  };
}

/** Stable checkpoint names of the adapters' variables. */
export function loraVariables(lora: TrainableLora): Map<string, tf.Variable> {
  const vars = new Map<string, tf.Variable>();
  for (const a of lora.adapters) {
    vars.set(`lora/${a.component}/${a.module}.down`, a.down);
    vars.set(`lora/${a.component}/${a.module}.up`, a.up);
  }
  return vars;
}

/**
 * The component's weights with its adapters applied: W + (α/r)·down@up for adapted keys, the
 * base tensors for the rest. The adapted tensors are new: inside a tidy they are freed with it,
 * outside the caller disposes them.
 */
export function paramsWithLora(params: Params, lora: TrainableLora, component: LoraComponent): Params {
  const out: Params = new Map(params);
  const scale = lora.alpha / lora.rank;
  for (const a of lora.adapters) {
    if (a.component !== component) continue;
    const key = `${a.module}.weight`;
    const w = params.get(key)!;
    out.set(key, tf.tidy(() => tf.add(w, loraDelta(a.down, a.up, scale))));
  }
  return out;
}

/** The trained adapters as core LoRA adapters (shared tensors, not copies), for files and merging. */
export function toLoraAdapters(lora: TrainableLora): LoraAdapter[] {
  return lora.adapters.map((a) => ({ component: a.component, module: a.module, down: a.down, up: a.up, alpha: lora.alpha, key: `${a.component}.${a.module}` }));
}

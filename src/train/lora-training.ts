/**
 * Trainable LoRA adapters (Hu et al. 2021) for DreamBooth-LoRA. By default on the modules
 * diffusers' train_dreambooth_lora.py adapts: the UNet's attention projections attn1/attn2 to_q,
 * to_k, to_v, to_out.0 and, with text-encoder training, CLIP's self_attn q/k/v/out_proj; with
 * --lora-targets transformer on kohya's (every Linear / 1×1 conv of the transformer blocks and
 * CLIP layers); with --lora-conv-rank also kohya's LoCon set of ResNet, down- and upsampler convs.
 *
 * Initialisation as peft's LoraConfig(init_lora_weights="gaussian") that script uses:
 * down ~ N(0, (1/r)²), up = 0, so training starts exactly at the base model. In the forward pass
 * the adapted weight is W' = W + (α/r)·down@up (eq. 3; for a conv, down is a conv of the weight's
 * kernel to r channels and up a 1×1 conv, as kohya's LoCon), built inside the loss closure so
 * that gradients reach only down and up; the base weights stay plain tensors.
 */
import * as tf from '@tensorflow/tfjs';
import { LOCON_TARGETS, LORA_TARGET_SETS, loraDelta, type LoraAdapter, type LoraComponent, type LoraTargetSet } from '../core/lora.js';
import type { Params } from '../core/params.js';
import type { Rng } from '../core/random.js';

export interface TrainableAdapter {
  component: LoraComponent;
  /** Module path as diffusers/transformers name it; the adapted weight is `${module}.weight`. */
  module: string;
  /** [in, r] (tfjs layout of Linear(in → r)), or [kh, kw, in, r] for a conv. */
  down: tf.Variable;
  /** [r, out], or [1, 1, r, out] for a conv. */
  up: tf.Variable;
  /** α: the adapter's scale is α / r. */
  alpha: number;
}

export interface TrainableLora {
  rank: number;
  alpha: number;
  adapters: TrainableAdapter[];
  dispose(): void;
}

/** What to adapt and at which rank. */
export interface LoraSpec {
  rank: number;
  alpha: number;
  /** Default 'attention' (diffusers'). */
  targets?: LoraTargetSet;
  /** LoCon: rank of the UNet's 3×3 ResNet/sampler convs (kohya's conv_dim); absent: none. */
  convRank?: number;
  /** α of those convs (kohya's conv_alpha; default: the conv rank, scale 1). */
  convAlpha?: number;
}

/** A weight's rank and alpha under `spec`, or undefined when it is not adapted. */
function adapterSize(key: string, shape: readonly number[], component: LoraComponent, spec: LoraSpec): { rank: number; alpha: number } | undefined {
  const main = { rank: spec.rank, alpha: spec.alpha };
  // Linear weights and 1×1 convs take the main rank; larger kernels the conv rank (kohya's rule).
  const oneByOne = shape.length === 2 || (shape.length === 4 && shape[0] === 1 && shape[1] === 1);
  if (LORA_TARGET_SETS[spec.targets ?? 'attention'][component].test(key)) return oneByOne ? main : undefined;
  if (component !== 'unet' || spec.convRank === undefined || !LOCON_TARGETS.test(key)) return undefined;
  return oneByOne ? main : { rank: spec.convRank, alpha: spec.convAlpha ?? spec.convRank };
}

/** Weight keys of a component that LoRA adapts under `spec`, in a fixed (sorted) order. */
export function loraTargetKeys(params: Params, component: LoraComponent, spec: LoraSpec = { rank: 1, alpha: 1 }): string[] {
  return [...params.keys()].filter((k) => adapterSize(k, params.get(k)!.shape, component, spec) !== undefined).sort();
}

let created = 0;

/** Adapters for every target weight of the given components, drawn from `rng`. */
export function createTrainableLora(components: { component: LoraComponent; params: Params }[], spec: LoraSpec, rng: Rng): TrainableLora {
  for (const [what, r] of [['rank', spec.rank], ['conv rank', spec.convRank ?? 1]] as const) {
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`LoRA ${what} must be a positive integer (got ${r})`);
  }
  if (!(spec.alpha > 0) || !((spec.convAlpha ?? 1) > 0)) throw new RangeError(`LoRA alpha must be positive (got ${spec.alpha}, conv ${spec.convAlpha})`);
  // Variable names are global in tfjs; a per-setup prefix keeps two setups apart.
  const prefix = `lora${++created}_${Date.now()}`;
  const adapters: TrainableAdapter[] = [];
  for (const { component, params } of components) {
    for (const key of loraTargetKeys(params, component, spec)) {
      const shape = params.get(key)!.shape;
      const { rank, alpha } = adapterSize(key, shape, component, spec)!;
      const module = key.slice(0, -'.weight'.length);
      // Linear [in, out]; conv HWIO [kh, kw, in, out]: down keeps the kernel, up is 1×1.
      const [downShape, upShape] = shape.length === 2 ? [[shape[0]!, rank], [rank, shape[1]!]] : [[shape[0]!, shape[1]!, shape[2]!, rank], [1, 1, rank, shape[3]!]];
      const count = downShape.reduce((a, b) => a * b, 1);
      const down = tf.tensor(rng.normals(count).map((v) => v / rank), downShape);
      const up = tf.zeros(upShape);
      adapters.push({
        component,
        module,
        alpha,
        down: tf.variable(down, true, `${prefix}/${component}/${module}.down`),
        up: tf.variable(up, true, `${prefix}/${component}/${module}.up`),
      });
      // The variables hold their own reference to the data.
      tf.dispose([down, up]);
    }
  }
  return {
    rank: spec.rank,
    alpha: spec.alpha,
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

function adapterRank(a: TrainableAdapter): number {
  return a.down.shape[a.down.rank - 1]!;
}

/**
 * The component's weights with its adapters applied: W + (α/r)·down@up for adapted keys, the
 * base tensors for the rest. The adapted tensors are new: inside a tidy they are freed with it,
 * outside the caller disposes them.
 */
export function paramsWithLora(params: Params, lora: TrainableLora, component: LoraComponent): Params {
  const out: Params = new Map(params);
  for (const a of lora.adapters) {
    if (a.component !== component) continue;
    const key = `${a.module}.weight`;
    const w = params.get(key)!;
    out.set(key, tf.tidy(() => tf.add(w, loraDelta(a.down, a.up, a.alpha / adapterRank(a)))));
  }
  return out;
}

/** The trained adapters as core LoRA adapters (shared tensors, not copies), for files and merging. */
export function toLoraAdapters(lora: TrainableLora): LoraAdapter[] {
  return lora.adapters.map((a) => ({ component: a.component, module: a.module, down: a.down, up: a.up, alpha: a.alpha, key: `${a.component}.${a.module}` }));
}

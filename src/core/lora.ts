/**
 * LoRA (Hu et al. 2021): a low-rank update of a Linear or Conv weight,
 *   W' = W + s · (α / r) · B A        (A = down [r, in], B = up [out, r], eq. 3 of the paper)
 * with r the rank, α the file's network alpha (diffusers files: α = r, i.e. factor 1; kohya files
 * store α per module) and s the runtime scale (diffusers' cross_attention_kwargs['scale'] /
 * lora_scale, which applies to the UNet AND the text-encoder adapters).
 *
 * Adapters live in tfjs layout like every weight: down is a Linear(in → r) weight [in, r] and
 * up a Linear(r → out) weight [r, out], so the delta in tfjs layout [in, out] is plainly
 * down @ up. Conv adapters: down HWIO [kh, kw, in, r], up HWIO [1, 1, r, out].
 *
 * Merging on load ("fuse") is exact for generation; diffusers keeps unmerged adapters, which
 * agrees to ~1e-5 (summation order). Un-fusing is applyLora with scale −s on the merged model,
 * or simply keeping the unmerged model.
 *
 * LyCORIS files add adapters of other shapes (LoHa, LoKr, LoCon with a Tucker core:
 * lora-lycoris.ts), merged as W + s · ΔW alike, and any adapter may be weight-decomposed (DoRA:
 * lora-dora.ts), merged as W + s · (W_dora − W). An α of 0 counts as no α, as kohya and LyCORIS
 * read it.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../errors.js';
import type { Embedding } from './embeddings.js';
import { doraChannels, doraMerge, type DoraMagnitude } from './lora-dora.js';
import { lycorisDelta, lycorisDeltaSize, lycorisTensors, torchShapeOf, type LycorisAdapter } from './lora-lycoris.js';
import type { StableDiffusion } from './model.js';
import type { Params } from './params.js';

export type LoraComponent = 'unet' | 'text_encoder';

/**
 * The weights painter's LoRA training adapts, as diffusers' train_dreambooth_lora.py: the UNet's
 * attention projections attn1/attn2 to_q, to_k, to_v, to_out.0 and CLIP's self_attn q/k/v/out_proj.
 */
export const LORA_TARGETS: Record<LoraComponent, RegExp> = {
  unet: /(^|\.)attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/,
  text_encoder: /(^|\.)self_attn\.(q_proj|k_proj|v_proj|out_proj)\.weight$/,
};

/**
 * Which weights LoRA training adapts (--lora-targets): `attention` as diffusers' DreamBooth-LoRA
 * script (LORA_TARGETS); `transformer` as kohya's networks/lora.py, every Linear and 1×1 conv of
 * the UNet's Transformer2DModel blocks (attention, feed-forward, proj_in/proj_out) and of CLIP's
 * layers (attention and MLP).
 */
export type LoraTargetSet = 'attention' | 'transformer';
export const LORA_TARGET_SETS: Record<LoraTargetSet, Record<LoraComponent, RegExp>> = {
  attention: LORA_TARGETS,
  transformer: {
    unet: /(^|\.)(transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))|attentions\.\d+\.(proj_in|proj_out))\.weight$/,
    text_encoder: /(^|\.)(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))\.weight$/,
  },
};

/**
 * The UNet weights kohya's LoCon (--lora-conv-rank, its conv_dim) adds, in its ResnetBlock2D,
 * Downsample2D and Upsample2D modules: 3×3 convs at the conv rank, and the blocks' own Linear and
 * 1×1 convs (time_emb_proj, conv_shortcut) at the main rank, as networks/lora.py assigns them.
 */
export const LOCON_TARGETS = /(^|\.)(resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)|downsamplers\.0\.conv|upsamplers\.0\.conv)\.weight$/;
export type LoraFormat = 'diffusers' | 'peft' | 'kohya';

/** Metadata of painter's pivotal-tuning LoRAs: the embedding's token and its file, written beside the LoRA. */
export const PIVOTAL_TOKEN_KEY = 'painter.ti_token';
export const PIVOTAL_EMBEDDING_KEY = 'painter.ti_embedding';

export interface LoraAdapter {
  component: LoraComponent;
  /** The adapted module as diffusers/transformers name it; the weight is `${module}.weight`. */
  module: string;
  /** tfjs layout: [in, r] (Linear) or [kh, kw, in, r] (Conv). */
  down: tf.Tensor;
  /** tfjs layout: [r, out] (Linear) or [1, 1, r, out] (Conv). */
  up: tf.Tensor;
  /** Network alpha; the file's scale is alpha / rank (absent or 0: 1, as diffusers' lora_alpha = r). */
  alpha?: number;
  /** DoRA magnitude (a LyCORIS file's `dora_scale`), when the module is weight-decomposed. */
  dora?: DoraMagnitude;
  /** The file key this adapter came from, for messages. */
  key: string;
}

export interface LoraWeights {
  file: string;
  format: LoraFormat;
  /** Plain low-rank adapters (LoRA, LoCon). */
  adapters: LoraAdapter[];
  /** LyCORIS adapters of other forms (LoHa, LoKr, LoCon-Tucker); absent in plain LoRA files. */
  lycoris?: LycorisAdapter[];
  /** Textual Inversion embeddings bundled in the file (A1111's bundle_emb.*), by trigger word. */
  embeddings?: Embedding[];
  metadata: Record<string, string>;
}

export interface LoraOptions {
  /** Which components to merge into (default both), as fuse_lora(components=…). */
  components?: readonly LoraComponent[];
}

export interface LoraModel {
  model: StableDiffusion;
  /** Number of weights changed per component. */
  merged: Record<LoraComponent, number>;
  /** Frees the merged weights this call created (the input model's tensors stay). */
  dispose(): void;
}

export function loraRank(a: Pick<LoraAdapter, 'down'>): number {
  return a.down.shape[a.down.rank - 1]!;
}

/** The file's own factor α / r (1 without alpha, or with alpha 0). */
export function loraScale(a: Pick<LoraAdapter, 'down' | 'alpha'>): number {
  return a.alpha === undefined || a.alpha === 0 ? 1 : a.alpha / loraRank(a);
}

/**
 * scale · down @ up in the adapted weight's tfjs layout ([in, out] or HWIO). Differentiable in
 * down and up (LoRA training uses it inside variableGrads).
 */
export function loraDelta(down: tf.Tensor, up: tf.Tensor, scale: number): tf.Tensor {
  return tf.tidy(() => {
    const r = down.shape[down.rank - 1]!;
    const out = up.shape[up.rank - 1]!;
    if (down.rank === 2 && up.rank === 2 && up.shape[0] === r) return tf.mul(tf.matMul(down, up), scale);
    if (down.rank === 4 && up.rank === 4 && up.shape[0] === 1 && up.shape[1] === 1 && up.shape[2] === r) {
      // W[h, w, i, o] = Σ_r down[h, w, i, r] · up[r, o]: a matmul over the flattened kernel.
      const [kh, kw, cin] = down.shape as number[];
      const flat = tf.matMul(down.reshape([kh! * kw! * cin!, r]), up.reshape([r, out]));
      return tf.mul(flat, scale).reshape([kh!, kw!, cin!, out]);
    }
    throw new Error(`loraDelta: down [${down.shape.join(', ')}] and up [${up.shape.join(', ')}] do not form a LoRA pair`);
  });
}

/** Any adapter a LoRA file holds: plain low-rank or a LyCORIS form. */
export type AnyAdapter = LoraAdapter | LycorisAdapter;

function isLycoris(a: AnyAdapter): a is LycorisAdapter {
  return 'kind' in a;
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/** Why the adapter does not fit a weight of tfjs-layout shape `w`, or undefined when it does. */
function misfit(a: AnyAdapter, w: readonly number[]): string | undefined {
  if (isLycoris(a)) {
    const size = lycorisDeltaSize(a);
    const [out, ...rest] = torchShapeOf([...w]);
    const inFlat = rest.reduce((x, y) => x * y, 1);
    const kernelOk = size.kernel === undefined || (w.length === 4 && size.kernel.join() === rest.slice(1).join());
    if (size.out !== out || size.inFlat !== inFlat || !kernelOk) {
      return `its ${a.kind} update is [${size.out}, ${size.inFlat}]${size.kernel ? ` with kernel ${shapeText(size.kernel)}` : ''} (PyTorch layout, in·kh·kw flattened), the weight [${out}, ${inFlat}]`;
    }
  } else {
    const r = loraRank(a);
    const delta = a.down.rank === 4 ? [a.down.shape[0], a.down.shape[1], a.down.shape[2], a.up.shape[3]] : [a.down.shape[0], a.up.shape[1]];
    const pair = a.down.rank === a.up.rank && a.up.shape[a.up.rank - 2] === r;
    if (!pair || delta.join() !== w.join()) return `down ${shapeText(a.down.shape)} and up ${shapeText(a.up.shape)} (tfjs layout) do not make it`;
  }
  if (a.dora && a.dora.magnitude.size !== doraChannels(w, a.dora.axis)) {
    return `its DoRA magnitude has ${a.dora.magnitude.size} values, the weight ${doraChannels(w, a.dora.axis)} ${a.dora.axis === 'out' ? 'output' : 'input'} channels`;
  }
  return undefined;
}

/** The adapters of the chosen components, plain ones first, each with the weight key it changes. */
export function loraTargets(lora: LoraWeights, components: readonly LoraComponent[] = ['unet', 'text_encoder']): { adapter: AnyAdapter; key: string }[] {
  const chosen = new Set(components);
  return [...lora.adapters, ...(lora.lycoris ?? [])].filter((a) => chosen.has(a.component)).map((adapter) => ({ adapter, key: `${adapter.module}.weight` }));
}

/**
 * Checks that adapter `a` of `lora` fits the model weight `key` of tfjs-layout shape `shape`
 * (undefined: the model has no such weight); throws an error naming the file and key otherwise.
 */
export function checkAdapter(lora: Pick<LoraWeights, 'file'>, a: AnyAdapter, key: string, shape: readonly number[] | undefined): void {
  if (!shape) {
    throw new PainterError(`${lora.file}: LoRA key "${a.key}" targets ${a.component} weight "${key}", which this model does not have; the LoRA was made for another architecture`);
  }
  const why = misfit(a, shape);
  if (why) throw new PainterError(`${lora.file}: LoRA key "${a.key}" does not fit ${a.component} weight "${key}" of shape ${shapeText(shape)}: ${why}`);
}

/** W merged with one adapter at runtime scale s (tfjs layout): W + s · ΔW, or DoRA's merge. */
export function mergeAdapter(a: AnyAdapter, w: tf.Tensor, scale: number): tf.Tensor {
  return tf.tidy(() => {
    const delta = isLycoris(a) ? lycorisDelta(a, w.shape) : loraDelta(a.down, a.up, loraScale(a));
    return a.dora ? doraMerge(w, delta, a.dora, scale) : tf.add(w, tf.mul(delta, scale));
  });
}

/**
 * Merges the adapters into a copy of the model's weights: W + s · ΔW for every adapter of the
 * chosen components (ΔW = (α/r) · down @ up for plain LoRA; LoHa/LoKr as lora-lycoris.ts builds
 * them; DoRA modules as lora-dora.ts). Adapter modules the model lacks, or shapes that differ,
 * are errors naming the LoRA file and key; nothing is merged then.
 */
export function applyLora(model: StableDiffusion, lora: LoraWeights, scale = 1, opts: LoraOptions = {}): LoraModel {
  const source: Record<LoraComponent, Params> = { unet: model.unet.params, text_encoder: model.textEncoder.params };
  const all = loraTargets(lora, opts.components);
  // Check everything first, so a bad file changes nothing.
  for (const { adapter: a, key } of all) checkAdapter(lora, a, key, source[a.component].get(key)?.shape);
  const created: tf.Tensor[] = [];
  const out: Record<LoraComponent, Params> = { unet: new Map(source.unet), text_encoder: new Map(source.text_encoder) };
  const merged: Record<LoraComponent, number> = { unet: 0, text_encoder: 0 };
  const touched = new Set<string>();
  for (const { adapter: a, key } of all) {
    const params = out[a.component];
    const w = params.get(key)!;
    const next = mergeAdapter(a, w, scale);
    // Two adapters on one weight (allowed by the formats) apply in turn; drop the intermediate.
    if (created.includes(w)) {
      w.dispose();
      created.splice(created.indexOf(w), 1);
    }
    created.push(next);
    params.set(key, next);
    const id = `${a.component}/${key}`;
    if (!touched.has(id)) merged[a.component]++;
    touched.add(id);
  }
  return {
    model: {
      ...model,
      unet: { config: model.unet.config, params: out.unet },
      textEncoder: { config: model.textEncoder.config, params: out.text_encoder },
    },
    merged,
    dispose: () => {
      for (const t of created) t.dispose();
      created.length = 0;
    },
  };
}

export function disposeLora(lora: LoraWeights): void {
  for (const a of lora.adapters) tf.dispose([a.down, a.up, ...(a.dora ? [a.dora.magnitude] : [])]);
  for (const a of lora.lycoris ?? []) tf.dispose(lycorisTensors(a));
}

/**
 * LoRAs baked into a model's weights as they are written: every weight an adapter changes is
 * merged exactly as `generate --lora` merges it on load (core/lora.ts: W + s · ΔW, LyCORIS forms,
 * DoRA), LoRA after LoRA in the order given, so a baked model generates what the base model with
 * the same `--lora FILE:SCALE` flags generates. Other weights pass through untouched.
 *
 * The changed weights are computed up front (asynchronously, so any backend serves) and held on
 * the host until written; the model's other tensors are still read one at a time.
 */
import * as tf from '@tensorflow/tfjs';
import { checkAdapter, loraTargets, mergeAdapter, type AnyAdapter, type LoraWeights } from '../core/lora.js';
import { tfjsShape, tfjsToTorch, torchToTfjs } from '../io/layout.js';
import type { HostTensor } from '../io/safetensors.js';
import type { ComponentSources } from '../io/single-file.js';
import { weightView, type ViewEntry, type WeightSource } from '../io/weight-source.js';

export interface LoraToBake {
  lora: LoraWeights;
  scale: number;
}

export interface BakedSources {
  parts: ComponentSources;
  /** Weights changed per component. */
  changed: { unet: number; text_encoder: number };
}

type Step = { adapter: AnyAdapter; scale: number };

/** One weight with its adapters applied in turn, back in PyTorch layout. */
async function bakeWeight(src: WeightSource, key: string, steps: Step[]): Promise<HostTensor> {
  const host = src.read(key);
  const t = torchToTfjs(key, { shape: host.shape, data: host.data as Float32Array });
  let w = tf.tensor(t.data, t.shape);
  for (const { adapter, scale } of steps) {
    const next = mergeAdapter(adapter, w, scale);
    w.dispose();
    w = next;
  }
  const data = (await w.data()) as Float32Array;
  const shape = w.shape;
  w.dispose();
  return { dtype: 'F32', ...tfjsToTorch(key, { shape, data }) };
}

/**
 * The model's sources with `loras` baked in. Every adapter is checked against the model before
 * anything is computed; a LoRA for another architecture is an error naming its file and key.
 */
export async function bakeLoras(parts: ComponentSources, loras: readonly LoraToBake[]): Promise<BakedSources> {
  const plan = { unet: new Map<string, Step[]>(), text_encoder: new Map<string, Step[]>() };
  for (const { lora, scale } of loras) {
    for (const { adapter, key } of loraTargets(lora)) {
      const entry = parts[adapter.component].entries.get(key);
      checkAdapter(lora, adapter, key, entry && tfjsShape(key, entry.shape));
      const steps = plan[adapter.component].get(key) ?? [];
      steps.push({ adapter, scale });
      plan[adapter.component].set(key, steps);
    }
  }
  const baked = async (component: 'unet' | 'text_encoder'): Promise<WeightSource> => {
    const src = parts[component];
    const done = new Map<string, HostTensor>();
    for (const [key, steps] of plan[component]) done.set(key, await bakeWeight(src, key, steps));
    const view = new Map<string, ViewEntry>();
    for (const [key, e] of src.entries) {
      const ready = done.get(key);
      view.set(key, { ...e, read: ready ? () => ready : () => src.read(key), fileKey: src.fileKey?.(key) ?? key });
    }
    return weightView(src.path, view);
  };
  return {
    parts: { unet: await baked('unet'), vae: parts.vae, text_encoder: await baked('text_encoder') },
    changed: { unet: plan.unet.size, text_encoder: plan.text_encoder.size },
  };
}

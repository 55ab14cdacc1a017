/**
 * A loaded Stable Diffusion pipeline: typed configs and weights of every component, the
 * tokenizer and the scheduler config. Plain data; the functions in core/pipeline use it.
 */
import type { ClipTextConfig } from './models/clip-text.js';
import type { UNetConfig } from './models/unet.js';
import type { VaeConfig } from './models/vae.js';
import type { Params } from './params.js';
import type { SchedulerConfig } from './schedulers/index.js';
import type { ClipTokenizer } from './tokenizer/clip-tokenizer.js';

export interface Component<C> {
  config: C;
  params: Params;
}

export interface StableDiffusion {
  /** Where it was loaded from (folder or single file), for messages and metadata. */
  source: string;
  unet: Component<UNetConfig>;
  vae: Component<VaeConfig>;
  textEncoder: Component<ClipTextConfig>;
  tokenizer: ClipTokenizer;
  scheduler: SchedulerConfig;
}

export function disposeModel(m: StableDiffusion): void {
  for (const c of [m.unet, m.vae, m.textEncoder]) {
    for (const t of c.params.values()) t.dispose();
    c.params.clear();
  }
}

/**
 * Frees a component's weights while the rest of the model goes on (training frees the VAE once
 * the images are encoded, and a frozen text encoder once the prompts are): its map is emptied, so
 * a later use fails naming a missing weight, and disposeModel skips it.
 */
export function releaseComponent(m: StableDiffusion, component: 'vae' | 'textEncoder'): void {
  const c = m[component];
  for (const t of c.params.values()) t.dispose();
  c.params.clear();
}

/**
 * Loads a Stable Diffusion pipeline from a diffusers folder (model_index.json, unet/, vae/,
 * text_encoder/, tokenizer/, scheduler/) or from an original single-file checkpoint plus a
 * folder that supplies the configs and tokenizer.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StableDiffusion } from '../core/model.js';
import { CLIP_TEXT_IGNORED_KEYS, clipTextParamShapes, parseClipTextConfig, type ClipTextConfig } from '../core/models/clip-text.js';
import { parseUNetConfig, unetParamShapes, type UNetConfig } from '../core/models/unet.js';
import { parseVaeConfig, vaeParamShapes, type VaeConfig } from '../core/models/vae.js';
import { parseSchedulerConfig, type SchedulerConfig } from '../core/schedulers/index.js';
import { PainterError } from '../errors.js';
import { loadClipTokenizer } from './load-tokenizer.js';
import { loadWeights, readJson } from './load-weights.js';
import { loadSingleFile, type Arch } from './single-file.js';

export interface LoadModelOptions {
  /** For a single-file checkpoint: a diffusers folder whose configs and tokenizer describe it. */
  config?: string;
  /** For a single-file checkpoint: the architecture when the file does not tell. */
  arch?: Arch | 'auto';
  /** Prefer `*.fp16.safetensors` weight variants when both exist (computed in float32 either way). */
  variant?: 'fp16';
  /** Load only these components' weights (diffusers folders); the others get empty weight maps. */
  parts?: readonly ('unet' | 'vae' | 'text_encoder')[];
}

const COMPONENTS = ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'] as const;

/** Weight files of a component: `name.safetensors` or its fp16 variant, or sharded files. */
function weightFiles(dir: string, variant?: 'fp16'): string[] {
  if (!fs.existsSync(dir)) throw new PainterError(`${dir}: component folder missing`);
  const all = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  const isFp16 = (f: string) => /\.fp16(-\d+-of-\d+)?\.safetensors$/.test(f) || /\.fp16\.safetensors$/.test(f);
  const full = all.filter((f) => !isFp16(f));
  const half = all.filter(isFp16);
  const chosen = variant === 'fp16' ? (half.length > 0 ? half : full) : full.length > 0 ? full : half;
  if (chosen.length === 0) {
    const bins = fs.readdirSync(dir).filter((f) => f.endsWith('.bin') || f.endsWith('.ckpt'));
    const hint = bins.length > 0 ? ` (found ${bins.join(', ')}: PyTorch pickles are not read; convert them to safetensors)` : '';
    throw new PainterError(`${dir}: no .safetensors weights${hint}`);
  }
  return chosen.sort().map((f) => path.join(dir, f));
}

interface Configs {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  scheduler: SchedulerConfig;
}

function readConfigs(dir: string): Configs {
  const file = (c: string, name: string) => path.join(dir, c, name);
  return {
    unet: parseUNetConfig(readJson(file('unet', 'config.json')), file('unet', 'config.json')),
    vae: parseVaeConfig(readJson(file('vae', 'config.json')), file('vae', 'config.json')),
    textEncoder: parseClipTextConfig(readJson(file('text_encoder', 'config.json')), file('text_encoder', 'config.json')),
    scheduler: parseSchedulerConfig(readJson(file('scheduler', 'scheduler_config.json')), file('scheduler', 'scheduler_config.json')),
  };
}

function checkFolder(dir: string): void {
  if (!fs.existsSync(path.join(dir, 'model_index.json'))) {
    throw new PainterError(
      `${dir}: no model_index.json; --model takes a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file .safetensors checkpoint`,
    );
  }
  for (const c of COMPONENTS) {
    if (!fs.existsSync(path.join(dir, c))) throw new PainterError(`${dir}: component folder "${c}/" missing; painter needs ${COMPONENTS.join(', ')}`);
  }
}

/** Loads a whole pipeline; `source` is a diffusers folder or a single-file `.safetensors`. */
export function loadModel(source: string, opts: LoadModelOptions = {}): StableDiffusion {
  if (!fs.existsSync(source)) throw new PainterError(`--model ${source}: not found; give a diffusers model folder or a .safetensors checkpoint`);
  if (fs.statSync(source).isFile()) return loadSingleFileModel(source, opts);
  checkFolder(source);
  const configs = readConfigs(source);
  const tokenizer = loadClipTokenizer(path.join(source, 'tokenizer'));
  const loaded: StableDiffusion['unet']['params'][] = [];
  const wanted = (part: 'unet' | 'vae' | 'text_encoder') => !opts.parts || opts.parts.includes(part);
  try {
    const unet = wanted('unet') ? loadWeights(weightFiles(path.join(source, 'unet'), opts.variant), unetParamShapes(configs.unet), 'unet') : new Map();
    loaded.push(unet);
    const vae = wanted('vae') ? loadWeights(weightFiles(path.join(source, 'vae'), opts.variant), vaeParamShapes(configs.vae), 'vae') : new Map();
    loaded.push(vae);
    const text = wanted('text_encoder')
      ? loadWeights(weightFiles(path.join(source, 'text_encoder'), opts.variant), clipTextParamShapes(configs.textEncoder), 'text_encoder', {
          ignore: CLIP_TEXT_IGNORED_KEYS,
        })
      : new Map();
    return {
      source,
      unet: { config: configs.unet, params: unet },
      vae: { config: configs.vae, params: vae },
      textEncoder: { config: configs.textEncoder, params: text },
      tokenizer,
      scheduler: configs.scheduler,
    };
  } catch (e) {
    for (const p of loaded) for (const t of p.values()) t.dispose();
    throw e;
  }
}

function loadSingleFileModel(file: string, opts: LoadModelOptions): StableDiffusion {
  if (!file.endsWith('.safetensors')) {
    throw new PainterError(`${file}: painter reads .safetensors checkpoints only (.ckpt files are Python pickles; convert them to safetensors first)`);
  }
  if (!opts.config) {
    throw new PainterError(
      `${file}: a single-file checkpoint holds no configs or tokenizer; pass --config DIR with a diffusers folder of the same architecture (its model_index.json, configs and tokenizer are used)`,
    );
  }
  checkFolder(opts.config);
  const configs = readConfigs(opts.config);
  const tokenizer = loadClipTokenizer(path.join(opts.config, 'tokenizer'));
  const arch = opts.arch === 'auto' ? undefined : opts.arch;
  const p = loadSingleFile(file, { unet: configs.unet, vae: configs.vae, textEncoder: configs.textEncoder }, arch);
  return {
    source: file,
    unet: { config: configs.unet, params: p.unet },
    vae: { config: configs.vae, params: p.vae },
    textEncoder: { config: configs.textEncoder, params: p.textEncoder },
    tokenizer,
    scheduler: configs.scheduler,
  };
}

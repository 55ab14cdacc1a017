/**
 * Loads a Stable Diffusion pipeline from a diffusers folder (model_index.json, unet/, vae/,
 * text_encoder/, tokenizer/, scheduler/) or from an original single-file checkpoint
 * (`.safetensors`, or a `.ckpt` read by the restricted unpickler), whose configs and tokenizer
 * come from `--config`, the file itself or its shapes (single-file-setup.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StableDiffusion } from '../core/model.js';
import { CLIP_TEXT_IGNORED_KEYS, clipTextParamShapes } from '../core/models/clip-text.js';
import { unetParamShapes } from '../core/models/unet.js';
import { vaeParamShapes } from '../core/models/vae.js';
import { overrideSchedulerConfig } from '../core/schedulers/config.js';
import { PainterError } from '../errors.js';
import { loadClipTokenizer } from './load-tokenizer.js';
import { loadWeights } from './load-weights.js';
import { readConfigs } from './pipeline-configs.js';
import { loadSingleFile, type Arch } from './single-file.js';
import type { PredictionType } from './single-file-infer.js';
import { singleFileSetup } from './single-file-setup.js';

export interface LoadModelOptions {
  /**
   * For a single-file checkpoint: a diffusers folder whose configs and tokenizer describe it
   * (without it: the file's own, else inferred from its keys and shapes; single-file-setup.ts).
   */
  config?: string;
  /** What the UNet predicts, over the scheduler config (and, for SD 2.x single files, which family they are). */
  predictionType?: PredictionType;
  /** For a single-file checkpoint: the architecture when the file does not tell. */
  arch?: Arch | 'auto';
  /** Prefer `*.fp16.safetensors` weight variants when both exist (computed in float32 either way). */
  variant?: 'fp16';
  /** For a single-file checkpoint: the UNet from its EMA copy (`model_ema.*`). */
  ema?: boolean;
  /** Load only these components' weights (diffusers folders); the others get empty weight maps. */
  parts?: readonly ('unet' | 'vae' | 'text_encoder')[];
}

const COMPONENTS = ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'] as const;

/** Weight files of a component: `name.safetensors` or its fp16 variant, or sharded files. */
export function weightFiles(dir: string, variant?: 'fp16'): string[] {
  if (!fs.existsSync(dir)) throw new PainterError(`${dir}: component folder missing`);
  const all = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  const isFp16 = (f: string) => /\.fp16(-\d+-of-\d+)?\.safetensors$/.test(f) || /\.fp16\.safetensors$/.test(f);
  const full = all.filter((f) => !isFp16(f));
  const half = all.filter(isFp16);
  const chosen = variant === 'fp16' ? (half.length > 0 ? half : full) : full.length > 0 ? full : half;
  if (chosen.length === 0) {
    const bins = fs.readdirSync(dir).filter((f) => f.endsWith('.bin') || f.endsWith('.ckpt'));
    const hint = bins.length > 0 ? ` (found ${bins.join(', ')}: a diffusers folder's PyTorch pickles are not read; convert them to safetensors)` : '';
    throw new PainterError(`${dir}: no .safetensors weights${hint}`);
  }
  return chosen.sort().map((f) => path.join(dir, f));
}

export function checkFolder(dir: string): void {
  if (!fs.existsSync(path.join(dir, 'model_index.json'))) {
    throw new PainterError(
      `${dir}: no model_index.json; --model takes a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file .safetensors or .ckpt checkpoint`,
    );
  }
  for (const c of COMPONENTS) {
    if (!fs.existsSync(path.join(dir, c))) throw new PainterError(`${dir}: component folder "${c}/" missing; painter needs ${COMPONENTS.join(', ')}`);
  }
}

/** Loads a whole pipeline; `source` is a diffusers folder or a single-file `.safetensors` / `.ckpt`. */
export function loadModel(source: string, opts: LoadModelOptions = {}): StableDiffusion {
  if (!fs.existsSync(source)) throw new PainterError(`--model ${source}: not found; give a diffusers model folder or a .safetensors / .ckpt checkpoint`);
  if (fs.statSync(source).isFile()) return withPrediction(loadSingleFileModel(source, opts), opts.predictionType);
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
    return withPrediction({
      source,
      unet: { config: configs.unet, params: unet },
      vae: { config: configs.vae, params: vae },
      textEncoder: { config: configs.textEncoder, params: text },
      tokenizer,
      scheduler: configs.scheduler,
    }, opts.predictionType);
  } catch (e) {
    for (const p of loaded) for (const t of p.values()) t.dispose();
    throw e;
  }
}

function loadSingleFileModel(file: string, opts: LoadModelOptions): StableDiffusion {
  if (opts.config !== undefined) checkFolder(opts.config);
  const setup = singleFileSetup(file, { config: opts.config, predictionType: opts.predictionType });
  const { configs } = setup;
  const arch = opts.arch === 'auto' ? undefined : opts.arch;
  const p = loadSingleFile(file, configs, arch, { ema: opts.ema });
  return {
    source: file,
    unet: { config: configs.unet, params: p.unet },
    vae: { config: configs.vae, params: p.vae },
    textEncoder: { config: configs.textEncoder, params: p.textEncoder },
    tokenizer: setup.tokenizer,
    scheduler: configs.scheduler,
  };
}

/** The model with its scheduler set to predict `type` (--prediction-type), whatever its config says. */
function withPrediction(model: StableDiffusion, type: PredictionType | undefined): StableDiffusion {
  return type === undefined ? model : { ...model, scheduler: overrideSchedulerConfig(model.scheduler, { prediction_type: type }) };
}

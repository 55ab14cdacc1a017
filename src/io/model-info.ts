/**
 * What a model folder or checkpoint holds, read from configs and safetensors headers (or a
 * `.ckpt`'s pickle) only (no weights are loaded): for `painter info --model`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../errors.js';
import { readJson } from './load-weights.js';
import { SD_FAMILIES } from './bundled-configs.js';
import { openWeightSource } from './open-weights.js';
import { inferFamily } from './single-file-infer.js';

export interface ComponentInfo {
  name: string;
  className: string;
  files: string[];
  parameters: number;
  dtypes: string[];
  config?: Record<string, unknown>;
}

export interface ModelInfo {
  path: string;
  layout: 'diffusers' | 'single-file';
  /** A single file's family, as told from its keys and shapes ('SD 1.x', 'SD 2.x 768 (v-prediction)', …). */
  family?: string;
  components: ComponentInfo[];
}

function headerStats(files: string[], prefix?: string): { parameters: number; dtypes: string[] } {
  let parameters = 0;
  const dtypes = new Set<string>();
  for (const file of files) {
    const f = openWeightSource(file);
    try {
      for (const [name, e] of f.entries) {
        if (prefix !== undefined && !name.startsWith(prefix)) continue;
        parameters += e.shape.reduce((a, b) => a * b, 1);
        dtypes.add(e.dtype);
      }
    } finally {
      f.close();
    }
  }
  return { parameters, dtypes: [...dtypes].sort() };
}

/** Weight files of a diffusers component folder: float32 files, else the fp16 variant. */
export function componentWeightFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const all = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  const full = all.filter((f) => !/\.fp16\.safetensors$/.test(f) && !f.includes('.fp16-'));
  return (full.length > 0 ? full : all).sort().map((f) => path.join(dir, f));
}

function singleFileFamily(file: string): string | undefined {
  const f = openWeightSource(file);
  try {
    const family = inferFamily(f.entries, f.globalStep);
    return family && SD_FAMILIES[family].label;
  } finally {
    f.close();
  }
}

export function describeModel(target: string): ModelInfo {
  if (!fs.existsSync(target)) throw new PainterError(`--model ${target}: not found; give a diffusers model folder or a .safetensors / .ckpt checkpoint`);
  if (fs.statSync(target).isFile()) {
    const groups: [string, string, string][] = [
      ['unet', 'model.diffusion_model.', 'UNet (LDM naming)'],
      ['vae', 'first_stage_model.', 'AutoencoderKL (LDM naming)'],
      ['text_encoder', 'cond_stage_model.', 'text encoder'],
    ];
    const components = groups.map(([name, prefix, className]) => ({ name, className, files: [target], ...headerStats([target], prefix) }));
    return { path: target, layout: 'single-file', family: singleFileFamily(target), components: components.filter((c) => c.parameters > 0) };
  }
  const indexFile = path.join(target, 'model_index.json');
  if (!fs.existsSync(indexFile)) {
    throw new PainterError(`${target}: no model_index.json; a diffusers model folder has model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/`);
  }
  const index = readJson(indexFile) as Record<string, unknown>;
  const components: ComponentInfo[] = [];
  for (const [name, value] of Object.entries(index)) {
    if (name.startsWith('_') || !Array.isArray(value) || value[1] === null) continue;
    const className = String(value[1]);
    const dir = path.join(target, name);
    const configFile = ['config.json', 'scheduler_config.json', 'tokenizer_config.json'].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
    const config = configFile ? (readJson(configFile) as Record<string, unknown>) : undefined;
    const files = componentWeightFiles(dir);
    components.push({ name, className, files, config, ...headerStats(files) });
  }
  return { path: target, layout: 'diffusers', components };
}

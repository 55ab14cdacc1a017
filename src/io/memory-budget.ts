/**
 * The model inputs of the memory estimate: weight sizes from safetensors headers (no tensor data
 * is read) and component configs. What a backend can hold is backend/capacity.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelDescription, ModelWeights, WeightStats } from '../core/memory/estimate.js';
import { parseClipTextConfig } from '../core/models/clip-text.js';
import { parseUNetConfig } from '../core/models/unet.js';
import { parseVaeConfig } from '../core/models/vae.js';
import { PainterError } from '../errors.js';
import { readJson } from './load-weights.js';
import { componentWeightFiles } from './model-info.js';
import { CONFIG_FILES } from './pipeline-configs.js';
import { closeSafetensors, openSafetensors, type TensorEntry } from './safetensors.js';
import { singleFileSetup } from './single-file-setup.js';

type Part = keyof ModelWeights;

/** Single-file (LDM) checkpoints: which key prefix holds which component. */
const SINGLE_FILE_PARTS: [string, 'unet' | 'vae' | 'textEncoder'][] = [
  ['model.diffusion_model.', 'unet'],
  ['first_stage_model.', 'vae'],
  ['cond_stage_model.', 'textEncoder'],
];

/**
 * How many private copies XNNPACK keeps of a weight on wasm (measured, tfjs-backend-wasm 4.22):
 * conv filters 2×, matmul weights 1×; embeddings, norms and biases are not packed. 1×1 convs
 * that painter runs as matmuls (transformer proj_in/proj_out, LDM VAE attention q/k/v/proj_out)
 * count as matmul weights. Shapes are as stored (PyTorch layout: conv OIHW, linear [out, in]).
 */
export function packFactor(key: string, shape: number[]): number {
  if (shape.length === 4) {
    const pointwise = shape[2] === 1 && shape[3] === 1;
    if (pointwise && /(^|\.)(proj_in|proj_out|q|k|v|to_q|to_k|to_v|to_out\.0)\.weight$/.test(key)) return 1;
    return 2;
  }
  if (shape.length === 2 && /(\.weight|in_proj_weight)$/.test(key) && !/(token|position|positional)_embedding/.test(key)) return 1;
  return 0;
}

function emptyStats(): WeightStats {
  return { bytes: 0, packedBytes: 0, largestBytes: 0 };
}

function add(stats: WeightStats, key: string, e: TensorEntry): void {
  // Integer entries are buffers the loader skips (position_ids); floats load as float32.
  if (e.dtype === 'I32' || e.dtype === 'I64') return;
  const bytes = e.shape.reduce((a, b) => a * b, 1) * 4;
  stats.bytes += bytes;
  stats.packedBytes += bytes * packFactor(key, e.shape);
  stats.largestBytes = Math.max(stats.largestBytes, bytes);
}

/** The VAE half a key (without the file's component prefix) belongs to. */
function vaeHalf(key: string): 'vaeEncoder' | 'vaeDecoder' {
  return key.startsWith('encoder.') || key.startsWith('quant_conv.') ? 'vaeEncoder' : 'vaeDecoder';
}

function forEachEntry(file: string, fn: (key: string, e: TensorEntry) => void): void {
  const f = openSafetensors(file);
  try {
    for (const [key, e] of f.entries) fn(key, e);
  } finally {
    closeSafetensors(f);
  }
}

/** Weight sizes of a diffusers folder or a single-file checkpoint, from headers only. */
export function readModelWeights(modelPath: string): ModelWeights {
  const w: ModelWeights = { unet: emptyStats(), textEncoder: emptyStats(), vaeEncoder: emptyStats(), vaeDecoder: emptyStats() };
  if (fs.statSync(modelPath).isFile()) {
    forEachEntry(modelPath, (key, e) => {
      const hit = SINGLE_FILE_PARTS.find(([prefix]) => key.startsWith(prefix));
      if (!hit) return; // EMA copies and other extras are not loaded
      const inner = key.slice(hit[0].length);
      const part: Part = hit[1] === 'vae' ? vaeHalf(inner) : hit[1];
      add(w[part], inner, e);
    });
    return w;
  }
  const folders: [string, (key: string) => Part][] = [
    ['unet', () => 'unet'],
    ['text_encoder', () => 'textEncoder'],
    ['vae', vaeHalf],
  ];
  for (const [folder, partOf] of folders) {
    const files = componentWeightFiles(path.join(modelPath, folder));
    if (files.length === 0) throw new PainterError(`${path.join(modelPath, folder)}: no .safetensors weights`);
    for (const file of files) forEachEntry(file, (key, e) => add(w[partOf(key)], key, e));
  }
  return w;
}

/** Component configs and weight sizes: everything the estimate needs, no tensor data. */
export function describeModelMemory(modelPath: string, configDir?: string): ModelDescription {
  if (!fs.existsSync(modelPath)) throw new PainterError(`--model ${modelPath}: not found; give a diffusers model folder or a .safetensors checkpoint`);
  const weights = readModelWeights(modelPath);
  if (fs.statSync(modelPath).isFile()) {
    // --config, the file's own configs, or those inferred from its shapes, as the loader finds them.
    const { unet, vae, textEncoder } = singleFileSetup(modelPath, { config: configDir }).configs;
    return { unet, vae, textEncoder, weights };
  }
  const file = (part: 'unet' | 'vae' | 'textEncoder') => path.join(modelPath, CONFIG_FILES[part]);
  return {
    unet: parseUNetConfig(readJson(file('unet')), file('unet')),
    vae: parseVaeConfig(readJson(file('vae')), file('vae')),
    textEncoder: parseClipTextConfig(readJson(file('textEncoder')), file('textEncoder')),
    weights,
  };
}

/**
 * The inputs of the memory estimate that live outside the process's tensors: weight sizes from
 * safetensors headers (no tensor data is read), component configs, and how much memory the
 * compute backend can hold (the wasm heap cap, free system memory, free GPU memory).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ModelDescription, ModelWeights, WeightStats } from '../core/memory/estimate.js';
import { parseClipTextConfig } from '../core/models/clip-text.js';
import { parseUNetConfig } from '../core/models/unet.js';
import { parseVaeConfig } from '../core/models/vae.js';
import { PainterError } from '../errors.js';
import { readJson } from './load-weights.js';
import { componentWeightFiles } from './model-info.js';
import { closeSafetensors, openSafetensors, type TensorEntry } from './safetensors.js';

/**
 * tfjs-backend-wasm 4.22's getHeapMax(): 65535 pages of 64 KiB, the most a wasm32 memory can
 * grow to. Every tensor of the wasm backend lives in this one heap.
 */
export const WASM_HEAP_MAX = 4294901760;

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
  const single = fs.statSync(modelPath).isFile();
  const dir = single ? configDir : modelPath;
  if (!dir) throw new PainterError(`${modelPath}: a single-file checkpoint holds no configs; pass --config DIR with a diffusers folder of the same architecture`);
  const file = (c: string) => path.join(dir, c, 'config.json');
  return {
    unet: parseUNetConfig(readJson(file('unet')), file('unet')),
    vae: parseVaeConfig(readJson(file('vae')), file('vae')),
    textEncoder: parseClipTextConfig(readJson(file('text_encoder')), file('text_encoder')),
    weights: readModelWeights(modelPath),
  };
}

// ---------------------------------------------------------------------------------------------
// Capacity
// ---------------------------------------------------------------------------------------------

export interface Capacity {
  /** Bytes the backend can hold; undefined when it cannot be found out. */
  bytes?: number;
  /** What limits it, for messages: "the wasm backend's heap", "free system memory". */
  what: string;
}

/** Memory the system can still give this process: MemAvailable, within a cgroup limit if any. */
export function availableSystemMemory(): number {
  let free = os.freemem();
  const constrained = (process as unknown as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  // Without a limit Node reports 0 or a huge number.
  if (constrained && constrained > 0 && constrained < os.totalmem()) free = Math.min(free, constrained - process.memoryUsage().rss);
  return Math.max(0, free);
}

/**
 * Free memory of the GPU TensorFlow uses, plus what this process already holds there, from
 * `nvidia-smi` CSV output (MiB): `index, memory.free` per GPU and `pid, used_memory` per process.
 */
export function parseNvidiaSmi(gpus: string, apps: string, pid: number, device: number): number | undefined {
  const row = gpus
    .trim()
    .split('\n')
    .map((l) => l.split(',').map((v) => Number(v.trim())))
    .find((r) => r[0] === device);
  if (!row || !Number.isFinite(row[1])) return undefined;
  let own = 0;
  for (const line of apps.trim().split('\n')) {
    const [p, used] = line.split(',').map((v) => Number(v.trim()));
    if (p === pid && Number.isFinite(used)) own += used!;
  }
  return (row[1]! + own) * 2 ** 20;
}

/** Free GPU memory for TensorFlow's first visible device, if nvidia-smi can tell. */
export function freeGpuMemory(): number | undefined {
  const visible = process.env['CUDA_VISIBLE_DEVICES']?.split(',')[0]?.trim();
  const device = visible && /^\d+$/.test(visible) ? Number(visible) : 0;
  const run = (args: string[]) => execFileSync('nvidia-smi', args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const gpus = run(['--query-gpu=index,memory.free', '--format=csv,noheader,nounits']);
    const apps = run(['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits']);
    return parseNvidiaSmi(gpus, apps, process.pid, device);
  } catch {
    return undefined;
  }
}

/** How much the active backend can hold. */
/** PAINTER_MEMORY_LIMIT ("512MB", "3GiB", bytes): a lower limit the user sets for painter. */
export function memoryLimitOverride(value = process.env['PAINTER_MEMORY_LIMIT']): number | undefined {
  if (!value) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$/i.exec(value);
  if (!m) throw new PainterError(`PAINTER_MEMORY_LIMIT=${value}: give a size such as 3GB or 512MiB`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const scale: Record<string, number> = { b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 2 ** 20, gb: 1e9, gib: 2 ** 30 };
  return Math.floor(Number(m[1]) * scale[unit]!);
}

export function backendCapacity(backend: { name: 'wasm' | 'cpu' | 'tensorflow'; gpu: boolean }): Capacity {
  const limit = memoryLimitOverride();
  if (limit !== undefined) return { bytes: limit, what: 'the PAINTER_MEMORY_LIMIT you set' };
  switch (backend.name) {
    case 'wasm': {
      const system = availableSystemMemory();
      if (system < WASM_HEAP_MAX) return { bytes: system, what: 'free system memory, which the wasm heap grows into' };
      return { bytes: WASM_HEAP_MAX, what: "the wasm backend's 4 GiB heap" };
    }
    case 'cpu':
      return { bytes: availableSystemMemory(), what: 'free system memory' };
    case 'tensorflow':
      if (backend.gpu) {
        const gpu = freeGpuMemory();
        return gpu === undefined ? { what: 'GPU memory, which nvidia-smi did not report' } : { bytes: gpu, what: 'free GPU memory' };
      }
      return { bytes: availableSystemMemory(), what: 'free system memory' };
  }
}

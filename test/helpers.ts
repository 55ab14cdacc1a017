/** Shared test utilities: backend set-up, reference tensors, tolerances. */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import type { DreamBoothSettings } from '../src/train/dreambooth.js';
import type { InvertSettings } from '../src/train/textual-inversion.js';
import { selectBackend, type BackendName } from '../src/backend/select.js';
import { loadSafetensors, type HostTensor } from '../src/io/safetensors.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = path.join(ROOT, 'fixtures');
export const TINY_SD_A = path.join(FIXTURES, 'tiny-sd-a');
export const REFERENCE = path.join(TINY_SD_A, 'reference');

/** Test backend: PAINTER_TEST_BACKEND or wasm (the CPU backend users get by default). */
export async function useBackend(name: BackendName = (process.env['PAINTER_TEST_BACKEND'] as BackendName) ?? 'wasm'): Promise<void> {
  await selectBackend(name);
}

/** All tensors of a reference file, floats as float32 tf tensors and ints as int32. */
export function loadReference(file: string): Map<string, tf.Tensor> {
  const { tensors } = loadSafetensors(path.isAbsolute(file) ? file : path.join(REFERENCE, file));
  const out = new Map<string, tf.Tensor>();
  for (const [k, t] of tensors) out.set(k, hostToTensor(t));
  return out;
}

export function hostToTensor(t: HostTensor): tf.Tensor {
  if (t.dtype === 'I64') return tf.tensor(Array.from(t.data, (v) => Number(v)), t.shape, 'int32');
  if (t.dtype === 'I32') return tf.tensor(t.data, t.shape, 'int32');
  return tf.tensor(t.data, t.shape, 'float32');
}

export function ref(m: Map<string, tf.Tensor>, key: string): tf.Tensor {
  const t = m.get(key);
  if (!t) throw new Error(`reference tensor "${key}" missing`);
  return t;
}

export function nchwToNhwc(t: tf.Tensor): tf.Tensor4D {
  return t.transpose([0, 2, 3, 1]) as tf.Tensor4D;
}

export function nhwcToNchw(t: tf.Tensor): tf.Tensor4D {
  return t.transpose([0, 3, 1, 2]) as tf.Tensor4D;
}

/**
 * Relative error as the reference README defines tolerance: max|a−b| / max|b|
 * (scale-aware, so near-zero elements do not dominate).
 */
export function relError(actual: tf.Tensor, expected: tf.Tensor): number {
  return tf.tidy(() => {
    const num = tf.max(tf.abs(tf.sub(actual, expected))).dataSync()[0]!;
    const den = tf.max(tf.abs(expected)).dataSync()[0]!;
    return num / Math.max(den, 1e-30);
  });
}

/** Textual Inversion settings for tiny-sd-a tests (32 px, one vector initialised from "cat"). */
export const TINY_INVERT_SETTINGS: InvertSettings = {
  token: '<kitty>',
  initToken: 'cat',
  vectors: 1,
  mode: 'object',
  resolution: 32,
  centerCrop: true,
  flip: true,
  batch: 1,
  minSnrGamma: 0,
  noiseOffset: 0,
  seed: 3,
  validationPrompt: 'a photo of <kitty>',
  format: 'diffusers',
  baseModelHash: 'test',
};

/** DreamBooth-LoRA on tiny-sd-a: "a photo of sks cat", no prior preservation, rank 2. */
export const TINY_DREAMBOOTH_SETTINGS: DreamBoothSettings = {
  ...TINY_INVERT_SETTINGS,
  identifier: 'sks',
  className: 'cat',
  instancePrompt: 'a photo of sks cat',
  classPrompt: 'a photo of a cat',
  priorPreservation: false,
  priorWeight: 1,
  mode: 'lora',
  rank: 2,
  alpha: 2,
  trainTextEncoder: false,
  format: 'diffusers',
};

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The command line run in this process (yargs, the command, the top-level error handler: all but
 * the bin shim), with `env` set for the run; what it writes to stdout and stderr is captured.
 */
export async function runCli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const { main } = await import('../src/cli/main.js');
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += String(chunk)), true)) as typeof process.stderr.write;
  try {
    return { code: await main(args), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/**
 * relError for backends that cannot read tensors synchronously (webgpu in Node): the same
 * max|a−b| / max|b|, read with `await data()`. The caller keeps ownership of both tensors.
 */
export async function relErrorAsync(actual: tf.Tensor, expected: tf.Tensor): Promise<number> {
  const [num, den] = tf.tidy(() => [tf.max(tf.abs(tf.sub(actual, expected))), tf.max(tf.abs(expected))]);
  try {
    const [n, d] = await Promise.all([num!.data(), den!.data()]);
    return n[0]! / Math.max(d[0]!, 1e-30);
  } finally {
    tf.dispose([num!, den!]);
  }
}

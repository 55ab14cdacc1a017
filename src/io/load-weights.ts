/**
 * Strict loading of a component's weights from safetensors files (or `.ckpt` checkpoints, see
 * open-weights.ts) into tfjs tensors: every expected key must be present with the expected
 * shape, and no other key may appear. Tensors are read and converted one at a time, so peak
 * memory stays near one copy.
 */
import * as fs from 'node:fs';
import { PainterError } from '../errors.js';
import { weightKind, type ParamShapes, type Params } from '../core/params.js';
import { setFromHost } from '../core/row-chunks.js';
import { tfjsShape, torchToTfjs } from './layout.js';
import { openWeightSource } from './open-weights.js';
import type { WeightSource, WeightSourceOptions } from './weight-source.js';

export interface LoadWeightsOptions {
  /** Keys that checkpoints may carry but the model does not use (e.g. position_ids buffers). */
  ignore?: RegExp | ((key: string) => boolean);
  /** How the files are read (e.g. a checkpoint's EMA copy of the UNet). */
  source?: WeightSourceOptions;
}

function ignored(rule: LoadWeightsOptions['ignore'], key: string): boolean {
  if (!rule) return false;
  return typeof rule === 'function' ? rule(key) : rule.test(key);
}

function shapeStr(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/**
 * Checks sources (PyTorch layout, e.g. renamed views of a single file) against `expected`
 * (tfjs-layout shapes) from their headers alone: an unexpected or missing key, a wrong shape, an
 * integer tensor or a key given twice is an error naming the file and the key as the file
 * names it. Returns the source of every expected key.
 */
export function matchWeights(sources: readonly WeightSource[], expected: ParamShapes, label: string, ignore?: LoadWeightsOptions['ignore']): Map<string, WeightSource> {
  const found = new Map<string, WeightSource>();
  const unexpected: string[] = [];
  for (const f of sources) {
    const named = (key: string) => f.fileKey?.(key) ?? key;
    for (const [key, e] of f.entries) {
      if (ignored(ignore, key)) continue;
      const want = expected.get(key);
      if (!want) {
        unexpected.push(named(key));
        continue;
      }
      if (e.dtype === 'I32' || e.dtype === 'I64') throw new PainterError(`${f.path}: weight "${named(key)}" of ${label} is an integer tensor (${e.dtype}); expected floats`);
      if (shapeStr(tfjsShape(key, e.shape)) !== shapeStr(want)) {
        throw new PainterError(
          `${f.path}: weight "${named(key)}" of ${label} has shape ${shapeStr(e.shape)} (PyTorch layout), which does not match the config (expected ${shapeStr(want)} in tfjs layout for "${key}"); is the config from the same model?`,
        );
      }
      if (found.has(key)) throw new PainterError(`${f.path}: weight "${named(key)}" of ${label} appears twice`);
      found.set(key, f);
    }
  }
  if (unexpected.length > 0) {
    throw new PainterError(`${sources[0]?.path ?? label}: ${unexpected.length} unexpected weight(s) for ${label}, e.g. "${unexpected[0]}"; the checkpoint does not match config.json`);
  }
  const missing = [...expected.keys()].filter((k) => !found.has(k));
  if (missing.length > 0) {
    const files = [...new Set(sources.map((f) => f.path))].join(', ');
    throw new PainterError(`${files}: ${missing.length} weight(s) of ${label} missing, e.g. "${missing[0]}"; the checkpoint does not match config.json`);
  }
  return found;
}

/** Loads `expected` keys (tfjs-layout shapes) from open sources in PyTorch layout, checked by matchWeights. */
export function loadFromSources(sources: readonly WeightSource[], expected: ParamShapes, label: string, ignore?: LoadWeightsOptions['ignore']): Params {
  const found = matchWeights(sources, expected, label, ignore);
  const params: Params = new Map();
  try {
    for (const [key, f] of found) {
      const host = f.read(key);
      if (host.dtype === 'I32' || host.dtype === 'I64') throw new PainterError(`${f.path}: weight "${f.fileKey?.(key) ?? key}" of ${label} is an integer tensor; expected floats`);
      const t = torchToTfjs(key, host);
      // A lookup table larger than the device binds at once is held in row chunks.
      setFromHost(params, key, t.data, t.shape, weightKind(key, t.shape.length) === 'embedding');
    }
    return params;
  } catch (e) {
    for (const t of params.values()) t.dispose();
    throw e;
  }
}

/** Loads `expected` keys (tfjs-layout shapes) from weights files in PyTorch layout. */
export function loadWeights(files: string[], expected: ParamShapes, label: string, opts: LoadWeightsOptions = {}): Params {
  const opened: WeightSource[] = [];
  try {
    for (const f of files) opened.push(openWeightSource(f, opts.source));
    return loadFromSources(opened, expected, label, opts.ignore);
  } finally {
    for (const f of opened) f.close();
  }
}

/**
 * JSON as Python's json module writes it: diffusers configs may hold the bare tokens Infinity,
 * -Infinity and NaN (e.g. DPM-Solver's "lambda_min_clipped": -Infinity), which JSON.parse
 * rejects. They are rewritten outside string literals before parsing.
 */
export function parsePythonJson(text: string): unknown {
  const fixed = text.replace(/("(?:[^"\\]|\\.)*")|(-?)Infinity|NaN/g, (m, str: string | undefined, sign: string | undefined) => {
    if (str !== undefined) return str;
    if (m === 'NaN') return 'null';
    return `${sign ?? ''}1e999`;
  });
  return JSON.parse(fixed);
}

/** Reads a JSON file, with an error that names the file. */
export function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new PainterError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
  try {
    return parsePythonJson(text);
  } catch (e) {
    throw new PainterError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

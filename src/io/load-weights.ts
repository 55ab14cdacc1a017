/**
 * Strict loading of a component's weights from safetensors files into tfjs tensors: every
 * expected key must be present with the expected shape, and no other key may appear.
 * Tensors are read and converted one at a time, so peak memory stays near one copy.
 */
import * as fs from 'node:fs';
import { PainterError } from '../errors.js';
import { weightKind, type ParamShapes, type Params } from '../core/params.js';
import { hasRows, setFromHost } from '../core/row-chunks.js';
import { torchToTfjs, type FloatArrayTensor } from './layout.js';
import { closeSafetensors, openSafetensors, readTensor, type SafetensorsFile } from './safetensors.js';

export interface LoadWeightsOptions {
  /** Keys that checkpoints may carry but the model does not use (e.g. position_ids buffers). */
  ignore?: RegExp | ((key: string) => boolean);
  /**
   * Checkpoint key → painter key(s), for checkpoints in another naming (single-file LDM,
   * OpenCLIP). Several keys for one tensor mean it is split (see `transform`); undefined means
   * the key has no counterpart and is unexpected.
   */
  mapKey?: (key: string) => string | string[] | undefined;
  /** Reshapes or splits a tensor (PyTorch layout) into one tensor per mapped key. */
  transform?: (key: string, t: FloatArrayTensor, count: number) => FloatArrayTensor[];
}

function ignored(rule: LoadWeightsOptions['ignore'], key: string): boolean {
  if (!rule) return false;
  return typeof rule === 'function' ? rule(key) : rule.test(key);
}

function shapeStr(s: number[]): string {
  return `[${s.join(', ')}]`;
}

/** Loads `expected` keys (tfjs-layout shapes) from safetensors files in PyTorch layout. */
export function loadWeights(files: string[], expected: ParamShapes, label: string, opts: LoadWeightsOptions = {}): Params {
  const opened: SafetensorsFile[] = [];
  const params: Params = new Map();
  try {
    for (const f of files) opened.push(openSafetensors(f));
    const unexpected: string[] = [];
    for (const f of opened) {
      for (const rawKey of f.entries.keys()) {
        if (ignored(opts.ignore, rawKey)) continue;
        const mapped = opts.mapKey ? opts.mapKey(rawKey) : rawKey;
        const keys = mapped === undefined ? [] : Array.isArray(mapped) ? mapped : [mapped];
        if (keys.length === 0 || !keys.some((k) => expected.has(k))) {
          unexpected.push(rawKey);
          continue;
        }
        const host = readTensor(f, rawKey);
        if (host.dtype === 'I32' || host.dtype === 'I64') {
          throw new PainterError(`${f.path}: weight "${rawKey}" of ${label} is an integer tensor (${host.dtype}); expected floats`);
        }
        const torchTensors = opts.transform ? opts.transform(rawKey, host, keys.length) : [host];
        keys.forEach((key, i) => {
          const want = expected.get(key);
          if (!want) return;
          const t = torchToTfjs(key, torchTensors[i]!);
          if (shapeStr(t.shape) !== shapeStr(want)) {
            throw new PainterError(
              `${f.path}: weight "${rawKey}" of ${label} has shape ${shapeStr(host.shape)} (PyTorch layout), which does not match the config (expected ${shapeStr(want)} in tfjs layout for "${key}"); is the config from the same model?`,
            );
          }
          if (hasRows(params, key)) throw new PainterError(`${f.path}: weight "${key}" of ${label} appears twice`);
          // A lookup table larger than the device binds at once is held in row chunks.
          setFromHost(params, key, t.data, t.shape, weightKind(key, t.shape.length) === 'embedding');
        });
      }
    }
    if (unexpected.length > 0) {
      throw new PainterError(
        `${opened[0]?.path ?? label}: ${unexpected.length} unexpected weight(s) for ${label}, e.g. "${unexpected[0]}"; the checkpoint does not match config.json`,
      );
    }
    const missing = [...expected.keys()].filter((k) => !hasRows(params, k));
    if (missing.length > 0) {
      throw new PainterError(
        `${files.join(', ')}: ${missing.length} weight(s) of ${label} missing, e.g. "${missing[0]}"; the checkpoint does not match config.json`,
      );
    }
    return params;
  } catch (e) {
    for (const t of params.values()) t.dispose();
    throw e;
  } finally {
    for (const f of opened) closeSafetensors(f);
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

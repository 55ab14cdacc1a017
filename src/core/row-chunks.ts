/**
 * Weights held as row chunks. A WebGPU kernel binds each input whole, and an adapter limits one
 * binding (`maxStorageBufferBindingSize`: 128 MiB on lavapipe and the WebGPU default); SD-1.5's
 * token embedding (49408×768 float32, 152 MB) is larger. Such a [rows, dim] table is stored in
 * the Params map as chunks of whole rows under `key#rows:START` instead of `key`, each within the
 * limit; it is only ever gathered from, sliced by row, grown (Textual Inversion) and saved, and
 * those operations work part by part here. Below the limit (every other backend, real GPUs) the
 * table stays one tensor and these functions take the one-part path.
 */
import * as tf from '@tensorflow/tfjs';
import { tensorByteLimit } from '../backend/webgpu.js';
import { PainterError } from '../errors.js';

/** The Params map of params.ts (which imports this file). */
type Params = Map<string, tf.Tensor>;

const CHUNK_MARK = '#rows:';

export function chunkKey(key: string, start: number): string {
  return `${key}${CHUNK_MARK}${start}`;
}

/** The key a chunk belongs to ("…weight#rows:32768" → "…weight"); the key itself otherwise. */
export function baseKey(key: string): string {
  const i = key.indexOf(CHUNK_MARK);
  return i < 0 ? key : key.slice(0, i);
}

export interface RowPart {
  /** Index of the part's first row in the whole table. */
  start: number;
  tensor: tf.Tensor;
}

/** The table's parts in row order: the tensor itself, or its chunks. */
export function rowParts(params: Params, key: string): RowPart[] {
  const whole = params.get(key);
  if (whole) return [{ start: 0, tensor: whole }];
  const prefix = key + CHUNK_MARK;
  const parts: RowPart[] = [];
  for (const [k, t] of params) if (k.startsWith(prefix)) parts.push({ start: Number(k.slice(prefix.length)), tensor: t });
  if (parts.length === 0) throw new Error(`missing weight "${key}"`);
  return parts.sort((a, b) => a.start - b.start);
}

/** Whether `key` is present, whole or as chunks. */
export function hasRows(params: Params, key: string): boolean {
  if (params.has(key)) return true;
  const prefix = key + CHUNK_MARK;
  for (const k of params.keys()) if (k.startsWith(prefix)) return true;
  return false;
}

/** [rows, dim] of a table held whole or in parts. */
export function rowsShape(parts: readonly RowPart[]): [number, number] {
  const last = parts[parts.length - 1]!;
  return [last.start + last.tensor.shape[0]!, last.tensor.shape[1]!];
}

/** Rows per chunk so that one chunk stays within `maxBytes` (float32). */
function rowsPerChunk(dim: number, maxBytes: number): number {
  return Math.max(1, Math.floor(maxBytes / (dim * 4)));
}

/** Removes `key` and its chunks from the map (not disposing them). */
export function deleteRows(params: Params, key: string): void {
  params.delete(key);
  const prefix = key + CHUNK_MARK;
  for (const k of [...params.keys()]) if (k.startsWith(prefix)) params.delete(k);
}

/**
 * Stores host data for `key`: one tensor when it fits the backend's binding limit, else row
 * chunks. Only lookup tables (`splittable`: the token embedding) can be split; any other weight
 * over the limit is refused with a message naming it.
 */
export function setFromHost(params: Params, key: string, data: Float32Array, shape: readonly number[], splittable: boolean, maxBytes = tensorByteLimit()): void {
  const chunks = chunkRanges(shape, maxBytes);
  if (!chunks) {
    params.set(key, tf.tensor(data, [...shape], 'float32'));
    return;
  }
  if (!splittable) {
    throw new PainterError(
      `weight "${key}" is ${mib(data.byteLength)}, more than this device binds at once (${mib(maxBytes)}); use a GPU with a larger maxStorageBufferBindingSize or another --backend`,
    );
  }
  const dim = shape[1]!;
  for (const c of chunks) params.set(chunkKey(key, c.start), tf.tensor2d(data.subarray(c.start * dim, (c.start + c.rows) * dim), [c.rows, dim], 'float32'));
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * The row ranges a [rows, dim] tensor is held in when it exceeds the binding limit; undefined
 * when it fits as one tensor.
 */
export function chunkRanges(shape: readonly number[], maxBytes = tensorByteLimit()): { start: number; rows: number }[] | undefined {
  if (shape.length !== 2 || shape[0]! * shape[1]! * 4 <= maxBytes) return undefined;
  const [rows, dim] = shape as [number, number];
  const per = rowsPerChunk(dim, maxBytes);
  const out: { start: number; rows: number }[] = [];
  for (let s = 0; s < rows; s += per) out.push({ start: s, rows: Math.min(per, rows - s) });
  return out;
}

/**
 * Rows `ids` of a table in parts: one gather per part, each row taken from the part that holds
 * it. Differentiable w.r.t. every part (a part's gradient reaches only its gathered rows).
 */
export function gatherRows(parts: readonly RowPart[], ids: tf.Tensor): tf.Tensor {
  const idx = ids.toInt();
  if (parts.length === 1) return tf.gather(parts[0]!.tensor, idx);
  const dim = parts[0]!.tensor.shape[1]!;
  let out: tf.Tensor | undefined;
  for (const p of parts) {
    const n = p.tensor.shape[0]!;
    const int = (v: number) => tf.scalar(v, 'int32');
    const local = tf.minimum(tf.maximum(tf.sub(idx, int(p.start)), int(0)), int(n - 1));
    const rows = tf.gather(p.tensor, local);
    if (!out) {
      out = rows;
      continue;
    }
    const inside = tf.greaterEqual(idx, int(p.start));
    out = tf.where(tf.broadcastTo(tf.expandDims(inside, -1), [...idx.shape, dim]), rows, out);
  }
  return out!;
}

/** Rows [start, start + count) as one tensor (they must fit the binding limit themselves). */
export function sliceRows(parts: readonly RowPart[], start: number, count: number): tf.Tensor2D {
  const dim = parts[0]!.tensor.shape[1]!;
  const pieces: tf.Tensor[] = [];
  for (const p of parts) {
    const n = p.tensor.shape[0]!;
    const from = Math.max(start, p.start);
    const to = Math.min(start + count, p.start + n);
    if (from < to) pieces.push(p.tensor.slice([from - p.start, 0], [to - from, dim]));
  }
  if (pieces.length === 1) return pieces[0] as tf.Tensor2D;
  const joined = tf.concat(pieces, 0) as tf.Tensor2D;
  tf.dispose(pieces);
  return joined;
}

/** The mean of rows [0, count) as [dim], summed part by part. */
export function meanRows(parts: readonly RowPart[], count: number): tf.Tensor1D {
  return tf.tidy(() => {
    const sums: tf.Tensor[] = [];
    for (const p of parts) {
      const n = Math.min(p.tensor.shape[0]!, count - p.start);
      if (n > 0) sums.push(tf.sum(n === p.tensor.shape[0] ? p.tensor : p.tensor.slice([0, 0], [n, -1]), 0));
    }
    return tf.div(sums.length === 1 ? sums[0]! : tf.addN(sums), count) as tf.Tensor1D;
  });
}

/** The whole table on the host (for writing files). */
export async function readRows(parts: readonly RowPart[]): Promise<{ shape: [number, number]; data: Float32Array }> {
  const shape = rowsShape(parts);
  if (parts.length === 1) return { shape, data: (await parts[0]!.tensor.data()) as Float32Array };
  const data = new Float32Array(shape[0] * shape[1]);
  for (const p of parts) data.set((await p.tensor.data()) as Float32Array, p.start * shape[1]);
  return { shape, data };
}

/** Every weight on the host under its own key, chunks joined: what files hold. */
export async function hostParams(params: Params): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, t] of params) {
    const key = baseKey(k);
    if (out.has(key)) continue;
    if (key === k) out.set(k, { shape: t.shape, data: (await t.data()) as Float32Array });
    else out.set(key, await readRows(rowParts(params, key)));
  }
  return out;
}

/**
 * Textual Inversion embedding files in the layouts other tools write, and painter's own output.
 *
 * - diffusers `learned_embeds.safetensors` (or a torch.save `.bin`): ONE tensor [k, dim] whose key
 *   is the token. painter writes this layout (plus painter metadata): diffusers'
 *   load_textual_inversion reads it with no arguments.
 * - AUTOMATIC1111 `.pt` (torch.save zip): {string_to_param: {'*': [k, dim]}, name, step, …}.
 * - kohya sd-scripts / A1111 `.safetensors`: ONE tensor `emb_params` [k, dim].
 *
 * The trigger token: a diffusers/painter file names it (its key). A1111 and kohya files do not
 * carry a usable one (A1111 triggers an embedding by its FILE NAME, and diffusers needs
 * `token=`), so painter uses the file stem, the word A1111 users type ("kitty.pt" → `kitty`);
 * `token` overrides it in every format.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Embedding } from '../core/embeddings.js';
import { PainterError } from '../errors.js';
import { loadSafetensors, writeSafetensors } from './safetensors.js';
import { readTorchFile } from './torch-file.js';
import { TorchTensor, type PyDict, type PyValue } from './torch-pickle.js';
import { looksLikeZip } from './zip.js';
import { isLegacyTorchHead, isPngHead, readFileHead } from './file-head.js';

export type EmbeddingFormat = 'painter' | 'diffusers' | 'a1111-pt' | 'a1111-safetensors';

export interface EmbeddingFile extends Embedding {
  file: string;
  format: EmbeddingFormat;
  /** The file's metadata as strings (safetensors __metadata__, or the A1111 dict's scalars). */
  metadata: Record<string, string>;
}

/** Metadata key painter writes into its embedding files (layout version). */
export const PAINTER_EMBEDDING_KEY = 'painter_embedding';
const A1111_KEY = 'emb_params';

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

function fileStem(file: string): string {
  return path.basename(file).replace(/\.[^.]*$/, '');
}

/** [k, dim] from a tensor of rank 1 ([dim], one vector) or 2. */
function vectorShape(file: string, where: string, shape: number[]): [number, number] {
  if (shape.length === 1) return [1, shape[0]!];
  if (shape.length === 2 && shape[0]! >= 1) return [shape[0]!, shape[1]!];
  fail(file, `${where} has shape [${shape.join(', ')}]; an embedding is [vectors, width]`);
}

function readHead(file: string): Uint8Array {
  try {
    return readFileHead(file, 4);
  } catch (e) {
    fail(file, `cannot read embedding file (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
}

interface Parsed {
  token: string | undefined;
  format: EmbeddingFormat;
  shape: number[];
  data: Float32Array;
  metadata: Record<string, string>;
}

function fromSafetensors(file: string): Parsed {
  const { tensors, metadata } = loadSafetensors(file);
  const keys = [...tensors.keys()];
  const pick = (key: string, token: string | undefined, format: EmbeddingFormat): Parsed => {
    const t = tensors.get(key)!;
    if (t.dtype === 'I32' || t.dtype === 'I64') fail(file, `${JSON.stringify(key)} holds integers, not embedding vectors`);
    return { token, format, shape: t.shape, data: t.data, metadata };
  };
  if (tensors.has(A1111_KEY)) return pick(A1111_KEY, undefined, 'a1111-safetensors');
  if (keys.length === 1) return pick(keys[0]!, keys[0], metadata[PAINTER_EMBEDDING_KEY] !== undefined ? 'painter' : 'diffusers');
  if (tensors.has('clip_l') || tensors.has('clip_g')) fail(file, 'this is an SDXL embedding (clip_l/clip_g); SD 1.x/2.x models take a single vector set');
  fail(file, `ambiguous embedding file: ${keys.length} tensors (${keys.slice(0, 5).map((k) => JSON.stringify(k)).join(', ')}${keys.length > 5 ? ', …' : ''}); expected one tensor named after its token, or "${A1111_KEY}"`);
}

function scalarMetadata(dict: PyDict): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of dict) {
    if (typeof k !== 'string') continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') out[k] = String(v);
  }
  return out;
}

function tensorOf(file: string, where: string, v: PyValue | undefined): TorchTensor {
  if (!(v instanceof TorchTensor)) fail(file, `${where} is not a tensor`);
  return v;
}

function fromTorch(file: string): Parsed {
  const value = readTorchFile(file);
  if (value instanceof TorchTensor) return { token: undefined, format: 'diffusers', shape: value.shape, data: value.data, metadata: {} };
  if (!(value instanceof Map)) fail(file, 'torch file does not hold an embedding (expected a dict)');
  const params = value.get('string_to_param');
  if (params !== undefined) {
    // AUTOMATIC1111 Embedding.save: the vectors are string_to_param['*'].
    if (!(params instanceof Map) || params.size !== 1) fail(file, 'string_to_param must hold exactly one tensor');
    const t = tensorOf(file, 'string_to_param', [...params.values()][0]);
    return { token: undefined, format: 'a1111-pt', shape: t.shape, data: t.data, metadata: scalarMetadata(value) };
  }
  if (value.has(A1111_KEY)) {
    const t = tensorOf(file, A1111_KEY, value.get(A1111_KEY));
    return { token: undefined, format: 'a1111-pt', shape: t.shape, data: t.data, metadata: scalarMetadata(value) };
  }
  if (value.size === 1) {
    // diffusers' learned_embeds.bin: {token: tensor}
    const [key, v] = [...value.entries()][0]!;
    if (typeof key !== 'string') fail(file, 'embedding key is not a string');
    const t = tensorOf(file, JSON.stringify(key), v);
    return { token: key, format: 'diffusers', shape: t.shape, data: t.data, metadata: {} };
  }
  fail(file, 'ambiguous embedding file: a dict without string_to_param (A1111) and with more than one entry');
}

/**
 * Reads an embedding in any supported layout. The token is the file's own (diffusers/painter) or
 * the file stem (A1111, kohya), unless `opts.token` is given.
 */
export function readEmbeddingFile(file: string, opts: { token?: string } = {}): EmbeddingFile {
  const head = readHead(file);
  if (head.length === 0) fail(file, 'empty file; not an embedding');
  let parsed: Parsed;
  if (looksLikeZip(head)) parsed = fromTorch(file);
  else if (isLegacyTorchHead(head)) fail(file, 'legacy torch.save format (torch < 1.6) is not supported; re-save it with a current torch');
  else if (isPngHead(head)) fail(file, 'embeddings stored inside PNG images are not supported; use the .pt or .safetensors file');
  else parsed = fromSafetensors(file);
  const shape = vectorShape(file, 'the embedding tensor', parsed.shape);
  const token = opts.token ?? parsed.token ?? fileStem(file);
  if (!token) fail(file, 'cannot tell the trigger token; pass one explicitly');
  return { file, token, vectors: Float32Array.from(parsed.data), shape, format: parsed.format, metadata: parsed.metadata };
}

export interface WriteEmbeddingOptions {
  /** 'diffusers' (default, painter's output: one key = token) or 'a1111' (kohya/A1111 `emb_params`). */
  format?: 'diffusers' | 'a1111';
  /** Extra __metadata__ (e.g. base model hash, steps, init token). */
  metadata?: Record<string, string>;
}

/** Writes an embedding atomically as `.safetensors`. `vectors` is [k, dim] (or [dim]). */
export async function writeEmbeddingFile(
  file: string,
  token: string,
  vectors: tf.Tensor | { data: Float32Array; shape: number[] },
  opts: WriteEmbeddingOptions = {},
): Promise<void> {
  const data = vectors instanceof tf.Tensor ? ((await vectors.data()) as Float32Array) : vectors.data;
  const shape = vectorShape(file, 'the vectors', vectors.shape);
  if (data.length !== shape[0] * shape[1]) throw new Error(`writeEmbeddingFile: ${data.length} values for shape [${shape.join(', ')}]`);
  if (!token) throw new PainterError(`${file}: an embedding needs a token`);
  const format = opts.format ?? 'diffusers';
  const key = format === 'diffusers' ? token : A1111_KEY;
  const metadata =
    format === 'diffusers' ? { format: 'pt', [PAINTER_EMBEDDING_KEY]: '1', token, ...opts.metadata } : { [PAINTER_EMBEDDING_KEY]: '1', token, ...opts.metadata };
  await writeSafetensors(file, { [key]: { dtype: 'F32', shape, data: Float32Array.from(data) } }, metadata);
}

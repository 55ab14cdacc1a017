/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors format):
 * 8-byte little-endian header length N, N bytes of JSON header, then the raw little-endian data area.
 *
 * The reader keeps only the header in memory and reads each tensor on demand from the file
 * descriptor, so a multi-GB checkpoint is never held twice while it is converted to tfjs tensors.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { PainterError } from '../errors.js';
import { bfloat16ToFloat, floatToBfloat16, floatToHalf, halfToFloat } from './float16.js';
import { writeFileAtomic } from './atomic.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };

/** A tensor on the host: floats are always float32 in memory whatever the storage dtype. */
export type HostTensor =
  | { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; data: Float32Array }
  | { dtype: 'I32'; shape: number[]; data: Int32Array }
  | { dtype: 'I64'; shape: number[]; data: BigInt64Array };

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte offsets [begin, end) inside the data area. */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  path: string;
  metadata: Record<string, string>;
  /** Entries in file order (by offset). */
  entries: Map<string, TensorEntry>;
  /** Absolute file offset of the data area. */
  dataStart: number;
  fd: number;
}

const MAX_HEADER_BYTES = 100_000_000; // same sanity bound as the reference implementation

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && s in DTYPE_BYTES;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Opens a file and validates its header; tensor data is read later with `readTensor`. */
export function openSafetensors(file: string): SafetensorsFile {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    fail(file, `cannot open safetensors file (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
  try {
    return parseHeader(file, fd);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function parseHeader(file: string, fd: number): SafetensorsFile {
  const size = fs.fstatSync(fd).size;
  if (size < 8) fail(file, `not a safetensors file: ${size} bytes, shorter than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  fs.readSync(fd, lenBuf, 0, 8, 0);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(size - 8)) {
    fail(file, `header length ${headerLen} reaches beyond the end of the file (${size} bytes): the file is truncated or not safetensors`);
  }
  const n = Number(headerLen);
  if (n > MAX_HEADER_BYTES) fail(file, `header of ${n} bytes is too large`);
  const headerBuf = Buffer.alloc(n);
  fs.readSync(fd, headerBuf, 0, n, 8);
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString('utf8'));
  } catch (e) {
    // V8 quotes the text around the error, which may hold control characters: escaped, the message stays one line.
    const why = (e as Error).message.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    fail(file, `header is not valid JSON (${why})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail(file, 'header is not a JSON object');

  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  let metadata: Record<string, string> = {};
  const list: TensorEntry[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') fail(file, `__metadata__ value of ${JSON.stringify(k)} is not a string`);
      }
      metadata = value as Record<string, string>;
      continue;
    }
    const info = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDtype(info?.dtype)) {
      fail(file, `tensor ${JSON.stringify(name)} has unsupported dtype ${JSON.stringify(info?.dtype)} (painter reads F32, F16, BF16, I32, I64)`);
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(file, `tensor ${JSON.stringify(name)} has an invalid shape ${JSON.stringify(shape)}`);
    }
    const offs = info.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(file, `tensor ${JSON.stringify(name)} has invalid data_offsets ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end || end > dataSize) {
      fail(file, `tensor ${JSON.stringify(name)} data_offsets [${begin}, ${end}] lie outside the data area of ${dataSize} bytes (file truncated?)`);
    }
    const expected = numel(shape as number[]) * DTYPE_BYTES[info.dtype];
    if (end - begin !== expected) {
      fail(file, `tensor ${JSON.stringify(name)} has shape [${(shape as number[]).join(', ')}] ${info.dtype} = ${expected} bytes but data_offsets span ${end - begin} bytes`);
    }
    list.push({ name, dtype: info.dtype, shape: shape as number[], begin, end });
  }
  // The data area must be tiled exactly: no overlaps, no gaps, nothing left over.
  list.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of list) {
    if (t.begin < cursor) fail(file, `tensor ${JSON.stringify(t.name)} data_offsets [${t.begin}, ${t.end}] overlap the previous tensor`);
    if (t.begin > cursor) fail(file, `tensor ${JSON.stringify(t.name)} data_offsets [${t.begin}, ${t.end}] leave a gap after byte ${cursor} (misordered offsets)`);
    cursor = t.end;
  }
  if (cursor !== dataSize) fail(file, `data area holds ${dataSize} bytes but the tensors cover ${cursor}`);
  return { path: file, metadata, entries: new Map(list.map((t) => [t.name, t])), dataStart, fd };
}

export function closeSafetensors(f: SafetensorsFile): void {
  fs.closeSync(f.fd);
}

function readBytes(f: SafetensorsFile, e: TensorEntry, into: Uint8Array): void {
  let done = 0;
  while (done < into.length) {
    const got = fs.readSync(f.fd, into, done, into.length - done, f.dataStart + e.begin + done);
    if (got === 0) fail(f.path, `tensor ${JSON.stringify(e.name)} ends early: file truncated`);
    done += got;
  }
}

// Data are little-endian; on a little-endian host (every platform Node ships for) bytes are read
// straight into the typed array, with no intermediate copy.
const LITTLE_ENDIAN = os.endianness() === 'LE';

/** Reads one tensor from disk, converting half/bfloat16 to float32. */
export function readTensor(f: SafetensorsFile, name: string): HostTensor {
  const e = f.entries.get(name);
  if (!e) fail(f.path, `no tensor named ${JSON.stringify(name)}`);
  if (!LITTLE_ENDIAN) throw new Error('painter needs a little-endian host to read safetensors');
  const n = numel(e.shape);
  const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (e.dtype) {
    case 'F32': {
      const data = new Float32Array(n);
      readBytes(f, e, bytesOf(data));
      return { dtype: 'F32', shape: e.shape, data };
    }
    case 'F16':
    case 'BF16': {
      const raw = new Uint16Array(n);
      readBytes(f, e, bytesOf(raw));
      const data = new Float32Array(n);
      const conv = e.dtype === 'F16' ? halfToFloat : bfloat16ToFloat;
      for (let i = 0; i < n; i++) data[i] = conv(raw[i]!);
      return { dtype: e.dtype, shape: e.shape, data };
    }
    case 'I32': {
      const data = new Int32Array(n);
      readBytes(f, e, bytesOf(data));
      return { dtype: 'I32', shape: e.shape, data };
    }
    case 'I64': {
      const data = new BigInt64Array(n);
      readBytes(f, e, bytesOf(data));
      return { dtype: 'I64', shape: e.shape, data };
    }
  }
}

/** Integer tensor as plain numbers (I64 values must fit a double exactly). */
export function toNumbers(t: HostTensor): number[] {
  if (t.dtype === 'I64') return Array.from(t.data, (v) => Number(v));
  return Array.from(t.data);
}

/** Reads every tensor of a small file (tests, embeddings, LoRA files). */
export function loadSafetensors(file: string): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  const f = openSafetensors(file);
  try {
    const tensors = new Map<string, HostTensor>();
    for (const name of f.entries.keys()) tensors.set(name, readTensor(f, name));
    return { tensors, metadata: f.metadata };
  } finally {
    closeSafetensors(f);
  }
}

type TensorData = Float32Array | Int32Array | BigInt64Array;

/**
 * What to write: float data is stored as `dtype` (F32 default; F16/BF16 convert). `data` may be
 * a function that reads the values when the tensor's turn comes, so a converted checkpoint is
 * never held in memory as a whole.
 */
export interface TensorToWrite {
  dtype?: SafetensorsDtype;
  shape: number[];
  data: TensorData | (() => TensorData);
}

function encodeTensor(name: string, t: TensorToWrite, dtype: SafetensorsDtype): Buffer {
  const n = numel(t.shape);
  const d = typeof t.data === 'function' ? t.data() : t.data;
  if (d.length !== n) throw new Error(`tensor "${name}": ${d.length} values for shape [${t.shape.join(', ')}]`);
  const buf = Buffer.allocUnsafe(n * DTYPE_BYTES[dtype]);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) buf.writeFloatLE(Number(d[i]), i * 4);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) buf.writeUInt16LE(floatToHalf(Number(d[i])), i * 2);
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) buf.writeUInt16LE(floatToBfloat16(Number(d[i])), i * 2);
      break;
    case 'I32':
      for (let i = 0; i < n; i++) buf.writeInt32LE(Number(d[i]), i * 4);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) buf.writeBigInt64LE(BigInt(d[i]!), i * 8);
      break;
  }
  return buf;
}

function defaultDtype(t: TensorToWrite): SafetensorsDtype {
  if (t.dtype) return t.dtype;
  if (t.data instanceof Int32Array) return 'I32';
  if (t.data instanceof BigInt64Array) return 'I64';
  return 'F32';
}

/**
 * Writes tensors atomically (temp file + rename). Tensors are laid out as the reference
 * implementation does: by dtype size descending, then by name; the header is space-padded to
 * a multiple of 8 bytes so the data area is aligned.
 */
export async function writeSafetensors(
  file: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  const items = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).map(([name, t]) => ({
    name,
    t,
    dtype: defaultDtype(t),
  }));
  items.sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  let offset = 0;
  for (const { name, t, dtype } of items) {
    if (name === '__metadata__') throw new Error('"__metadata__" is reserved and cannot name a tensor');
    const bytes = numel(t.shape) * DTYPE_BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));
  await writeFileAtomic(file, (fd) => {
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, headerBuf);
    // One tensor at a time, so the file is never held in memory as a whole.
    for (const { name, t, dtype } of items) fs.writeSync(fd, encodeTensor(name, t, dtype));
  });
}

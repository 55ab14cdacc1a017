/**
 * `torch.save` files (the zip format of torch ≥ 1.6): `<prefix>/data.pkl` (the pickle, run by
 * torch-pickle.ts's restricted interpreter) and `<prefix>/data/<key>` (raw little-endian storages,
 * referenced through persistent ids ('storage', StorageType, key, location, numel)).
 *
 * Two ways in: `readTorchFile` for small files (embeddings, LoRA `.bin`/`.pt`: everything read
 * and CRC-checked up front, tensors in memory) and `openTorchArchive` for checkpoints (the file
 * stays open and each tensor is read from it when asked for, so a multi-GB `.ckpt` is never held
 * whole). A tensor's geometry is checked against its storage when the pickle rebuilds it, before
 * any data is read.
 */
import { PainterError } from '../errors.js';
import { bfloat16ToFloat, halfToFloat } from './float16.js';
import { PyGlobal, PyTuple, STORAGE_TYPES, StorageRef, toInt, TorchTensor, unpickle, type PyValue, type StorageDtype, type TorchData } from './torch-pickle.js';
import { closeZip, openZip, readZipEntry, readZipEntryInto, verifyZip, type ZipArchive } from './zip.js';

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

/** A storage's values: floats converted to float32, integers as stored. */
function storageValues(dtype: StorageDtype, raw: Uint8Array, numel: number): TorchData {
  // `raw` is a fresh allocation, so its buffer starts aligned for any element size.
  switch (dtype) {
    case 'float32':
      return new Float32Array(raw.buffer, raw.byteOffset, numel);
    case 'float64':
      return Float32Array.from(new Float64Array(raw.buffer, raw.byteOffset, numel));
    case 'float16':
    case 'bfloat16': {
      const half = new Uint16Array(raw.buffer, raw.byteOffset, numel);
      const conv = dtype === 'float16' ? halfToFloat : bfloat16ToFloat;
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = conv(half[i]!);
      return out;
    }
    case 'int64':
      return new BigInt64Array(raw.buffer, raw.byteOffset, numel);
    case 'int32':
      return new Int32Array(raw.buffer, raw.byteOffset, numel);
  }
}

function emptyLike(v: TorchData, n: number): TorchData {
  if (v instanceof BigInt64Array) return new BigInt64Array(n);
  if (v instanceof Int32Array) return new Int32Array(n);
  return new Float32Array(n);
}

/** Gathers a (possibly strided) view of a storage into a dense row-major array. */
function gatherStrided(storage: TorchData, offset: number, shape: number[], stride: number[]): TorchData {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = emptyLike(storage, n);
  const src = storage as unknown as ArrayLike<number> & { [i: number]: number };
  const dst = out as unknown as { [i: number]: number };
  const idx = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < n; o++) {
    let at = offset;
    for (let d = 0; d < shape.length; d++) at += idx[d]! * stride[d]!;
    dst[o] = src[at]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expect) return false;
    expect *= shape[d]!;
  }
  return true;
}

/** Runs the archive's pickle, building tensors that read their storages from `zip` on demand. */
function unpickleArchive(zip: ZipArchive): PyValue {
  const file = zip.file;
  const pickles = [...zip.entries.keys()].filter((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  if (pickles.length !== 1) {
    fail(file, pickles.length === 0 ? 'ZIP archive without data.pkl: not a torch.save file' : 'several data.pkl entries: not a single torch.save file');
  }
  const prefix = pickles[0]!.slice(0, -'data.pkl'.length);
  const order = zip.entries.has(`${prefix}byteorder`) ? readZipEntry(zip, `${prefix}byteorder`).toString('utf8').trim() : 'little';
  if (order !== 'little') fail(file, `tensor data are ${order}-endian; painter reads little-endian torch files only`);
  return unpickle(readZipEntry(zip, pickles[0]!), file, {
    persistentLoad(pid) {
      // ('storage', StorageType, key, location, numel)
      const t = pid instanceof PyTuple ? pid.items : [];
      const type = t[1] as unknown;
      if (t[0] !== 'storage' || !(type instanceof PyGlobal) || typeof type.fn !== 'object' || typeof t[2] !== 'string') {
        fail(file, 'unsupported persistent id in the pickle (not a torch storage)');
      }
      const numel = toInt(t[4], file, 'storage size');
      if (numel < 0) fail(file, `storage ${JSON.stringify(t[2])} has a negative size (damaged file)`);
      return new StorageRef(type.fn.storage, t[2], numel);
    },
    rebuildTensor(ref, offset, shape, stride) {
      const type = STORAGE_TYPES[ref.storage]!;
      const name = `${prefix}data/${ref.key}`;
      const entry = zip.entries.get(name);
      if (!entry) fail(file, `archive has no entry ${JSON.stringify(name)} (damaged file)`);
      if (entry.size < ref.numel * type.bytes) fail(file, `storage ${JSON.stringify(name)} holds ${entry.size} bytes, fewer than its ${ref.numel} ${type.dtype} values`);
      if (stride.length !== shape.length || shape.some((d) => d < 0) || offset < 0 || stride.some((s) => s < 0)) fail(file, 'malformed tensor geometry in the pickle');
      const n = shape.reduce((a, b) => a * b, 1);
      // A zero stride can make a huge view of a tiny storage; no weights file needs one.
      if (n > Math.max(ref.numel, 1 << 20)) fail(file, `tensor of ${n} values is larger than its storage of ${ref.numel}`);
      const last = offset + shape.reduce((acc, d, i) => acc + (d - 1) * stride[i]!, 0);
      if (n > 0 && last >= ref.numel) fail(file, 'tensor reaches outside its storage (damaged file)');
      const load = (): TorchData => {
        const raw = new Uint8Array(entry.size);
        readZipEntryInto(zip, name, raw);
        const values = storageValues(type.dtype, raw, ref.numel);
        if (n === 0) return emptyLike(values, 0);
        // The common case, a whole contiguous storage, needs no gather.
        if (offset === 0 && n === ref.numel && isContiguous(shape, stride)) return values;
        return gatherStrided(values, offset, shape, stride);
      };
      return new TorchTensor(type.dtype, shape, load);
    },
  });
}

/** Reads every tensor of a value once, so errors in their data surface now. */
function readAll(v: PyValue): void {
  if (v instanceof TorchTensor) void v.data;
  else if (v instanceof Map) for (const x of v.values()) readAll(x);
  else if (Array.isArray(v)) for (const x of v) readAll(x);
  else if (v instanceof PyTuple) for (const x of v.items) readAll(x);
}

/**
 * Loads a small torch.save file as plain data with its tensors in memory (float32). Every
 * entry's CRC-32 is checked first, so a damaged file is refused even where the damage is in an
 * entry the pickle does not use. Errors (not a torch file, truncated, damaged, refused globals)
 * name the file.
 */
export function readTorchFile(file: string): PyValue {
  const zip = openZip(file);
  try {
    verifyZip(zip);
    const value = unpickleArchive(zip);
    readAll(value);
    return value;
  } finally {
    closeZip(zip);
  }
}

export interface TorchArchive {
  file: string;
  /** The unpickled object; its tensors read their values from the open file when asked. */
  value: PyValue;
  /** Closes the file; tensors not yet read cannot be read afterwards. */
  close(): void;
}

/**
 * Opens a torch.save file (e.g. a `.ckpt` checkpoint) without reading its tensors: only the
 * ZIP directory and the pickle are read now; each tensor's storage is read (and CRC-checked)
 * when the tensor is. The caller closes it.
 */
export function openTorchArchive(file: string): TorchArchive {
  const zip = openZip(file);
  try {
    return { file, value: unpickleArchive(zip), close: () => closeZip(zip) };
  } catch (e) {
    closeZip(zip);
    throw e;
  }
}

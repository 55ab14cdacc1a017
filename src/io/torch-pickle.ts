/**
 * A restricted interpreter for the pickles inside `torch.save` files: enough of Python's pickle
 * to rebuild dicts, lists, tuples, strings, numbers and tensors, as embeddings, LoRA files and
 * `.ckpt` checkpoints need. It never runs code: the only globals it knows are the few below (an
 * OrderedDict, storage types, tensor/parameter rebuild functions, and a few classes that old
 * checkpoints carry as inert bookkeeping); any other GLOBAL (os.system, builtins.eval, …) is
 * refused the moment it is named, and any opcode outside the binary protocols' data opcodes is
 * an error naming the file. Tensors are built by the caller's hooks (torch-file.ts reads their
 * storages from the archive).
 */
import { PainterError } from '../errors.js';

export type PyKey = string | number | bigint | boolean | null;
/** Dict keys: plain values, or a class (old PyTorch Lightning checkpoints key callbacks by class). */
export type PyDict = Map<PyKey | PyGlobal, PyValue>;
export type PyValue = PyKey | Uint8Array | PyValue[] | PyTuple | PyDict | TorchTensor | PyGlobal | StorageRef | PyInert;

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

export type StorageDtype = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32';

/** Host values of a tensor: floats as float32 whatever the storage dtype, integers as stored. */
export type TorchData = Float32Array | BigInt64Array | Int32Array;

/**
 * A tensor rebuilt from a torch storage. Its values are read when first asked for (`data`, kept)
 * or on each `read()` (not kept: a checkpoint's tensors are read one at a time).
 */
export class TorchTensor {
  #data?: Float32Array;
  constructor(
    /** torch dtype of the storage */
    readonly dtype: StorageDtype,
    readonly shape: number[],
    private readonly load: () => TorchData,
  ) {}

  /** Values as float32 (integers converted), read once and kept. */
  get data(): Float32Array {
    if (!this.#data) {
      const v = this.load();
      this.#data = v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number | bigint>, Number);
    }
    return this.#data;
  }

  /** Values read afresh from the file (floats as float32, integers as stored). */
  read(): TorchData {
    return this.#data ?? this.load();
  }
}

export const STORAGE_TYPES: Record<string, { dtype: StorageDtype; bytes: number }> = {
  FloatStorage: { dtype: 'float32', bytes: 4 },
  HalfStorage: { dtype: 'float16', bytes: 2 },
  BFloat16Storage: { dtype: 'bfloat16', bytes: 2 },
  DoubleStorage: { dtype: 'float64', bytes: 8 },
  LongStorage: { dtype: 'int64', bytes: 8 },
  IntStorage: { dtype: 'int32', bytes: 4 },
};

/**
 * Python objects the reader can build; everything else is refused. 'inert' globals are classes
 * that original CompVis/Lightning checkpoints carry next to the weights (a callback class as a
 * dict key, numpy scalars for its scores): they become opaque placeholders, built from nothing
 * and never called, so loading such a file runs no code either.
 */
type Callable = 'OrderedDict' | 'rebuild_tensor_v2' | 'rebuild_parameter' | 'codecs_encode' | 'inert';
const ALLOWED_GLOBALS: Record<string, Callable | { storage: string }> = {
  'collections OrderedDict': 'OrderedDict',
  'torch._utils _rebuild_tensor_v2': 'rebuild_tensor_v2',
  'torch._utils _rebuild_parameter': 'rebuild_parameter',
  ...Object.fromEntries(Object.keys(STORAGE_TYPES).map((s) => [`torch ${s}`, { storage: s }])),
  // Protocol 2 pickles bytes as _codecs.encode(str, 'latin1'): plain data.
  '_codecs encode': 'codecs_encode',
  'pytorch_lightning.callbacks.model_checkpoint ModelCheckpoint': 'inert',
  'numpy.core.multiarray scalar': 'inert',
  'numpy dtype': 'inert',
};

/** An object of an 'inert' class: what it was built from is dropped. */
export class PyInert {
  constructor(readonly label: string) {}
}

/** A reference to one of the allowed Python globals (inert data until REDUCE calls it). */
export class PyGlobal {
  constructor(
    readonly fn: Callable | { storage: string },
    readonly label: string,
  ) {}
}

/** A persistent reference to a torch storage (inert until a tensor is rebuilt from it). */
export class StorageRef {
  constructor(
    readonly storage: string,
    readonly key: string,
    readonly numel: number,
  ) {}
}

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

export interface UnpickleHooks {
  /** Resolves a persistent id (BINPERSID). */
  persistentLoad(pid: PyValue): StorageRef;
  /** Rebuilds a tensor from a storage reference. */
  rebuildTensor(storage: StorageRef, offset: number, shape: number[], stride: number[]): TorchTensor;
}

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

function isKey(v: unknown): v is PyKey | PyGlobal {
  return v === null || v instanceof PyGlobal || ['string', 'number', 'bigint', 'boolean'].includes(typeof v);
}

export function toInt(v: unknown, file: string, what: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint' && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  fail(file, `unexpected ${what} in the pickle`);
}

function intTuple(v: StackItem, file: string, what: string): number[] {
  if (!(v instanceof PyTuple)) fail(file, `unexpected ${what} in the pickle`);
  return v.items.map((x) => toInt(x, file, what));
}

/** Decodes a little-endian signed integer of any length (LONG1/LONG4). */
function readLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
  return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/**
 * Runs the pickle program in `data` on a value stack, building only plain data and the allowed
 * torch objects. `file` names the source in errors.
 */
export function unpickle(data: Uint8Array, file: string, hooks: UnpickleHooks): PyValue {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, StackItem>();
  let pos = 0;

  const need = (n: number) => {
    if (pos + n > buf.length) fail(file, 'pickle data ends early (truncated or damaged file)');
  };
  const take = (n: number): Buffer => {
    need(n);
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const u8 = () => take(1)[0]!;
  const u16 = () => take(2).readUInt16LE(0);
  const u32 = () => take(4).readUInt32LE(0);
  const u64 = () => {
    const v = take(8).readBigUInt64LE(0);
    if (v > BigInt(buf.length)) fail(file, 'pickle length field exceeds the data (damaged file)');
    return Number(v);
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail(file, 'pickle data ends early (truncated or damaged file)');
    const s = buf.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };
  const pop = (): StackItem => {
    if (stack.length === 0) fail(file, 'pickle stack underflow (damaged file)');
    return stack.pop()!;
  };
  const popMark = (): StackItem[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) fail(file, 'pickle MARK missing (damaged file)');
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const top = (): StackItem => {
    if (stack.length === 0) fail(file, 'pickle stack underflow (damaged file)');
    return stack[stack.length - 1]!;
  };
  const value = (v: StackItem | symbol): PyValue => {
    if (typeof v === 'symbol') fail(file, 'pickle MARK used as a value (damaged file)');
    return v;
  };
  const setItems = (dict: StackItem, kv: StackItem[]) => {
    if (!(dict instanceof Map)) fail(file, 'pickle SETITEM on something that is not a dict');
    for (let i = 0; i + 1 < kv.length; i += 2) {
      const k = kv[i]!;
      if (!isKey(k)) fail(file, 'pickle dict key of an unsupported type');
      dict.set(k, value(kv[i + 1]!));
    }
  };
  const pushGlobal = (module: string, name: string) => {
    const label = `${module} ${name}`;
    const fn = ALLOWED_GLOBALS[label];
    if (!fn) {
      fail(
        file,
        `refusing to load: the pickle calls the Python global ${JSON.stringify(`${module}.${name}`)}, which no weights file needs (painter runs no code from pickles: it reads tensors, dicts, lists and tuples only); if you trust the file, convert it to .safetensors with PyTorch`,
      );
    }
    stack.push(new PyGlobal(fn, `${module}.${name}`));
  };
  const call = (g: StackItem, args: StackItem): StackItem => {
    if (!(g instanceof PyGlobal) || !(args instanceof PyTuple)) fail(file, 'pickle REDUCE on something that is not an allowed callable');
    const a = args.items as StackItem[];
    switch (g.fn) {
      case 'OrderedDict':
        if (a.length !== 0) fail(file, 'unsupported OrderedDict construction in the pickle');
        return new Map();
      case 'rebuild_tensor_v2': {
        // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        const storage = a[0];
        if (!(storage instanceof StorageRef) || a.length < 4) fail(file, 'malformed tensor record in the pickle');
        return hooks.rebuildTensor(storage, toInt(a[1]!, file, 'tensor offset'), intTuple(a[2]!, file, 'tensor size'), intTuple(a[3]!, file, 'tensor stride'));
      }
      case 'rebuild_parameter':
        // _rebuild_parameter(data, requires_grad, backward_hooks): a Parameter is just its tensor here.
        if (!(a[0] instanceof TorchTensor)) fail(file, 'malformed parameter record in the pickle');
        return a[0];
      case 'codecs_encode':
        if (typeof a[0] !== 'string' || (a[1] !== 'latin1' && a[1] !== 'latin-1')) fail(file, 'unsupported _codecs.encode call in the pickle');
        return new Uint8Array(Buffer.from(a[0], 'latin1'));
      case 'inert':
        return new PyInert(g.label);
      default:
        fail(file, `${JSON.stringify(g.label)} cannot be called`);
    }
  };

  for (;;) {
    need(1);
    const op = buf[pos++]!;
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail(file, 'pickle protocol newer than 5');
        break;
      case 0x95: // FRAME
        take(8);
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) fail(file, 'pickle ended with a malformed stack (damaged file)');
        return value(stack[0]!);
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(take(4).readInt32LE(0));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(readLong(take(u8())));
        break;
      case 0x8b: // LONG4
        stack.push(readLong(take(u32())));
        break;
      case 0x47: // BINFLOAT (big-endian double)
        stack.push(take(8).readDoubleBE(0));
        break;
      case 0x58: // BINUNICODE
        stack.push(take(u32()).toString('utf8'));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(take(u8()).toString('utf8'));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(take(u64()).toString('utf8'));
        break;
      case 0x54: // BINSTRING (Python 2 str)
        stack.push(take(u32()).toString('latin1'));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(take(u8()).toString('latin1'));
        break;
      case 0x42: // BINBYTES
        stack.push(new Uint8Array(take(u32())));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(new Uint8Array(take(u8())));
        break;
      case 0x8e: // BINBYTES8
        stack.push(new Uint8Array(take(u64())));
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x74: // TUPLE
        stack.push(new PyTuple(popMark().map(value)));
        break;
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()].map(value)));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b].map(value)));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c].map(value)));
        break;
      }
      case 0x6c: // LIST
        stack.push(popMark().map(value));
        break;
      case 0x64: {
        // DICT
        const d: PyDict = new Map();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) fail(file, 'pickle APPEND on something that is not a list');
        list.push(value(v));
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail(file, 'pickle APPENDS on something that is not a list');
        list.push(...items.map(value));
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(file, `pickle memo entry ${i} missing (damaged file)`);
        stack.push(memo.get(i)!);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        pushGlobal(module, line());
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail(file, 'malformed STACK_GLOBAL in the pickle');
        pushGlobal(module, name);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args), allowed for the inert classes only
        const args = pop();
        const cls = pop();
        if (!(cls instanceof PyGlobal) || cls.fn !== 'inert' || !(args instanceof PyTuple)) fail(file, 'pickle NEWOBJ (opcode 0x81) of something that is not an allowed class');
        stack.push(new PyInert(cls.label));
        break;
      }
      case 0x62: {
        // BUILD: obj.__setstate__(state); inert objects drop their state
        pop();
        if (!(top() instanceof PyInert)) fail(file, 'pickle BUILD (opcode 0x62) on something that is not an allowed object');
        break;
      }
      case 0x51: // BINPERSID
        stack.push(hooks.persistentLoad(value(pop())));
        break;
      default:
        fail(file, `unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${pos - 1}; painter reads torch.save data only`);
    }
  }
}

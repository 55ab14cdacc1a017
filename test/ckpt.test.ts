/**
 * `.ckpt` single-file checkpoints (torch.save zip pickles): the shared reference
 * tiny-sd-a.ckpt (written by torch.save, CompVis `state_dict` layout) reads to the same tensors as
 * the safetensors file beside it and generates the same image; half/bfloat16/int64 storages, bare
 * state dicts, EMA copies and Lightning bookkeeping load; malicious pickles are refused without
 * running anything; truncated or damaged files give one line naming the file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { parseClipTextConfig } from '../src/core/models/clip-text.js';
import { parseUNetConfig } from '../src/core/models/unet.js';
import { parseVaeConfig } from '../src/core/models/vae.js';
import type { Params } from '../src/core/params.js';
import { convert } from '../src/app/convert.js';
import { PainterError } from '../src/errors.js';
import { floatToBfloat16, floatToHalf } from '../src/io/float16.js';
import { loadModel } from '../src/io/load-model.js';
import { readJson } from '../src/io/load-weights.js';
import { identifyFile } from '../src/io/concept-info.js';
import { describeModel } from '../src/io/model-info.js';
import { openWeightSource } from '../src/io/open-weights.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { loadSingleFile, type PipelineConfigs } from '../src/io/single-file.js';
import { emaKey } from '../src/io/weight-source.js';
import { FIXTURES, ROOT, runCli, TINY_SD_A, useBackend } from './helpers.js';
import { disposeGeneration, generate, loadInteropReference, storedZip } from './interop-helpers.js';

const DIR = path.join(FIXTURES, 'tiny-sd-a-single-file');
/** The shared reference (CI has ../shared beside the clone; a user's clone does not need it). */
const CKPT = path.join(ROOT, '..', 'shared', 'reference', 'single-file', 'tiny-sd-a.ckpt');
const SAFETENSORS = path.join(DIR, 'tiny-sd-a.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-ckpt-'));
const at = (name: string) => path.join(tmp, name);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let configs: PipelineConfigs;
beforeAll(async () => {
  await useBackend();
  const cfg = (c: string) => readJson(path.join(TINY_SD_A, c, 'config.json'));
  configs = {
    unet: parseUNetConfig(cfg('unet'), 'unet/config.json'),
    vae: parseVaeConfig(cfg('vae'), 'vae/config.json'),
    textEncoder: parseClipTextConfig(cfg('text_encoder'), 'text_encoder/config.json'),
  };
});

/** Pickle protocol 2 opcodes, as torch.save writes them. */
const op = {
  proto2: Buffer.from([0x80, 0x02]),
  emptyDict: Buffer.from([0x7d]),
  mark: Buffer.from([0x28]),
  tuple: Buffer.from([0x74]),
  emptyTuple: Buffer.from([0x29]),
  reduce: Buffer.from([0x52]),
  setitem: Buffer.from([0x73]),
  setitems: Buffer.from([0x75]),
  binpersid: Buffer.from([0x51]),
  newfalse: Buffer.from([0x89]),
  stop: Buffer.from([0x2e]),
  str(s: string): Buffer {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return Buffer.concat([Buffer.from([0x58]), len, b]);
  },
  int(n: number): Buffer {
    const b = Buffer.alloc(5);
    b[0] = 0x4a;
    b.writeInt32LE(n, 1);
    return b;
  },
  global: (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`),
};

type Storage = 'FloatStorage' | 'HalfStorage' | 'BFloat16Storage' | 'LongStorage';
interface CkptTensor {
  shape: number[];
  values: ArrayLike<number>;
  storage?: Storage;
}

function storageBytes(t: CkptTensor): Buffer {
  const n = t.values.length;
  switch (t.storage ?? 'FloatStorage') {
    case 'FloatStorage':
      return Buffer.from(Float32Array.from(t.values).buffer);
    case 'HalfStorage':
      return Buffer.from(Uint16Array.from(t.values, floatToHalf).buffer);
    case 'BFloat16Storage':
      return Buffer.from(Uint16Array.from(t.values, floatToBfloat16).buffer);
    case 'LongStorage':
      return Buffer.from(BigInt64Array.from({ length: n }, (_, i) => BigInt(t.values[i]!)).buffer);
  }
}

/**
 * A torch.save archive of a state dict (wrapped as `{'state_dict': …, 'global_step': 470000}`
 * unless `bare`); `extra` is pickle code that leaves (key, value) pairs for the outer dict.
 */
function ckptBytes(tensors: Record<string, CkptTensor>, opts: { bare?: boolean; extra?: Buffer } = {}): Buffer {
  const entries: Record<string, Buffer> = {};
  const dict: Buffer[] = [op.emptyDict, op.mark];
  Object.entries(tensors).forEach(([k, t], i) => {
    entries[`archive/data/${i}`] = storageBytes(t);
    const stride = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    dict.push(
      op.str(k),
      op.global('torch._utils', '_rebuild_tensor_v2'),
      op.mark,
      op.mark,
      op.str('storage'),
      op.global('torch', t.storage ?? 'FloatStorage'),
      op.str(String(i)),
      op.str('cpu'),
      op.int(t.values.length),
      op.tuple,
      op.binpersid,
      op.int(0),
      Buffer.concat([op.mark, ...t.shape.map(op.int), op.tuple]),
      Buffer.concat([op.mark, ...stride.map(op.int), op.tuple]),
      op.newfalse,
      op.global('collections', 'OrderedDict'),
      op.emptyTuple,
      op.reduce,
      op.tuple,
      op.reduce,
    );
  });
  dict.push(op.setitems);
  const state = Buffer.concat(dict);
  const pkl = opts.bare
    ? Buffer.concat([op.proto2, state, op.stop])
    : Buffer.concat([op.proto2, op.emptyDict, op.mark, op.str('state_dict'), state, op.str('global_step'), op.int(470000), opts.extra ?? Buffer.alloc(0), op.setitems, op.stop]);
  return storedZip({ 'archive/data.pkl': pkl, ...entries, 'archive/version': Buffer.from('3\n') });
}

function write(name: string, bytes: Buffer): string {
  fs.writeFileSync(at(name), bytes);
  return at(name);
}

function expectSameParams(a: Params, b: Params, label: string): void {
  expect([...a.keys()].sort(), label).toEqual([...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    expect(u.shape, k).toEqual(t.shape);
    expect(Buffer.from((u.dataSync() as Float32Array).buffer).equals(Buffer.from((t.dataSync() as Float32Array).buffer)), k).toBe(true);
  }
}

function disposeParams(...ps: Params[]): void {
  for (const p of ps) for (const t of p.values()) t.dispose();
}

/** The reference file's tensors, as plain arrays for building other checkpoints. */
function referenceTensors(): Record<string, CkptTensor> {
  const out: Record<string, CkptTensor> = {};
  for (const [k, t] of loadSafetensors(SAFETENSORS).tensors) out[k] = { shape: t.shape, values: t.data as Float32Array };
  return out;
}

/** Runs `fn` and returns the PainterError it throws (failing the test otherwise). */
function painterError(fn: () => unknown): PainterError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PainterError);
    return e as PainterError;
  }
  throw new Error('expected a PainterError');
}

describe('the shared reference tiny-sd-a.ckpt', () => {
  it('reads to the same 512 tensors as tiny-sd-a.safetensors, bit for bit', () => {
    const reference = loadSafetensors(SAFETENSORS).tensors;
    const src = openWeightSource(CKPT);
    try {
      expect([...src.entries.keys()].sort()).toEqual([...reference.keys()].sort());
      expect(src.entries.size).toBe(512);
      for (const [k, t] of reference) {
        const got = src.read(k);
        expect(got.dtype, k).toBe('F32');
        expect(got.shape, k).toEqual(t.shape);
        expect(Buffer.from((got.data as Float32Array).buffer).equals(Buffer.from((t.data as Float32Array).buffer)), k).toBe(true);
      }
    } finally {
      src.close();
    }
  });

  it('loads as a single-file model to the same weights as the safetensors file', () => {
    const a = loadSingleFile(CKPT, configs);
    const b = loadSingleFile(SAFETENSORS, configs);
    try {
      expectSameParams(a.unet, b.unet, 'unet');
      expectSameParams(a.vae, b.vae, 'vae');
      expectSameParams(a.textEncoder, b.textEncoder, 'text_encoder');
    } finally {
      disposeParams(a.unet, a.vae, a.textEncoder, b.unet, b.vae, b.textEncoder);
    }
  });

  it('--model x.ckpt generates the same image as the .safetensors beside it', () => {
    const reference = loadInteropReference();
    const models: StableDiffusion[] = [loadModel(CKPT, { config: TINY_SD_A }), loadModel(SAFETENSORS, { config: TINY_SD_A })];
    try {
      const [a, b] = models.map((m) => generate(m, 'a photo of a cat', reference));
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a!.image!, b!.image!))).dataSync()[0]!);
      console.log('ckpt vs safetensors image max abs diff:', diff);
      expect(diff).toBe(0);
      disposeGeneration(a!);
      disposeGeneration(b!);
    } finally {
      models.forEach(disposeModel);
      tf.dispose([...reference.values()]);
    }
  });

  it('on the command line: generate --model x.ckpt --config DIR writes a picture', async () => {
    const r = await runCli(['generate', 'a cat', '--model', CKPT, '--config', TINY_SD_A, '--steps', '1', '--out', at('cli-out'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(at('cli-out')).some((f) => f.endsWith('.png'))).toBe(true);
  });

  it('painter info tells a .ckpt is a model and describes it like the .safetensors', () => {
    expect(identifyFile(CKPT)).toBe('model');
    const a = describeModel(CKPT);
    const b = describeModel(SAFETENSORS);
    expect(a.components.map((c) => [c.name, c.parameters, c.dtypes])).toEqual(b.components.map((c) => [c.name, c.parameters, c.dtypes]));
  });
});

describe('checkpoints as other tools write them', () => {
  it('half, bfloat16 and int64 storages, a bare state dict, unused int64 position_ids', () => {
    const tensors = referenceTensors();
    const mixed: Record<string, CkptTensor> = {};
    let i = 0;
    for (const [k, t] of Object.entries(tensors)) mixed[k] = { ...t, storage: i++ % 2 === 0 ? 'HalfStorage' : 'BFloat16Storage' };
    const POSITION_IDS = 'cond_stage_model.transformer.text_model.embeddings.position_ids';
    mixed[POSITION_IDS] = { shape: [1, 77], values: Array.from({ length: 77 }, (_, j) => j), storage: 'LongStorage' };
    const file = write('mixed.ckpt', ckptBytes(mixed, { bare: true }));
    const src = openWeightSource(file);
    try {
      const ids = src.read(POSITION_IDS);
      expect(ids.dtype).toBe('I64');
      expect(Array.from(ids.data as BigInt64Array, Number)).toEqual(Array.from({ length: 77 }, (_, j) => j));
      for (const [k, t] of Object.entries(mixed)) {
        if (k === POSITION_IDS) continue;
        const half = t.storage === 'HalfStorage';
        expect(src.entries.get(k)!.dtype, k).toBe(half ? 'F16' : 'BF16');
        // Stored values widen to float32 exactly: rounding them back gives the stored bits.
        const round = half ? floatToHalf : floatToBfloat16;
        expect(Array.from(src.read(k).data as Float32Array, round), k).toEqual(Array.from(t.values, round));
      }
    } finally {
      src.close();
    }
    const p = loadSingleFile(file, configs);
    disposeParams(p.unet, p.vae, p.textEncoder);
  });

  it('EMA weights (model_ema.*) are ignored by default and read in place of the UNet with ema (also by convert --ema)', async () => {
    const tensors = referenceTensors();
    const withEma: Record<string, CkptTensor> = { ...tensors };
    for (const [k, t] of Object.entries(tensors)) {
      if (k.startsWith('model.diffusion_model.')) withEma[emaKey(k)] = { shape: t.shape, values: Float32Array.from(t.values, (v) => 2 * v) };
    }
    withEma['model_ema.decay'] = { shape: [], values: [0.9999] };
    withEma['model_ema.num_updates'] = { shape: [], values: [470000], storage: 'LongStorage' };
    expect(emaKey('model.diffusion_model.input_blocks.0.0.weight')).toBe('model_ema.diffusion_modelinput_blocks00weight');
    const file = write('ema.ckpt', ckptBytes(withEma));
    const plain = loadSingleFile(SAFETENSORS, configs);
    const normal = loadSingleFile(file, configs);
    const ema = loadSingleFile(file, configs, undefined, { ema: true });
    try {
      expectSameParams(normal.unet, plain.unet, 'unet');
      expectSameParams(ema.vae, plain.vae, 'vae');
      for (const [k, t] of plain.unet) {
        const doubled = tf.tidy(() => tf.mul(t, 2));
        expect(Buffer.from((ema.unet.get(k)!.dataSync() as Float32Array).buffer).equals(Buffer.from((doubled.dataSync() as Float32Array).buffer)), k).toBe(true);
        doubled.dispose();
      }
    } finally {
      for (const p of [plain, normal, ema]) disposeParams(p.unet, p.vae, p.textEncoder);
    }
    // convert --ema writes the EMA UNet, as diffusers' --extract_ema; without it the training weights.
    for (const ema of [false, true]) {
      const out = path.join(tmp, `ema-${ema}`);
      await convert({ input: file, output: out, config: TINY_SD_A, ema });
      const unet = loadSafetensors(path.join(out, 'unet', 'diffusion_pytorch_model.safetensors')).tensors;
      const ref = loadSafetensors(path.join(TINY_SD_A, 'unet', 'diffusion_pytorch_model.safetensors')).tensors;
      for (const [k, t] of ref) expect(Array.from(unet.get(k)!.data as Float32Array), k).toEqual(Array.from(t.data as Float32Array, (v) => (ema ? 2 * v : v)));
    }
    const noEma = painterError(() => loadSingleFile(CKPT, configs, undefined, { ema: true }));
    expect(noEma.message).toBe(`${CKPT}: holds no EMA weights (no model_ema.* keys); load it without the EMA option`);
  });

  it("PyTorch Lightning's bookkeeping (a callback class as a dict key, numpy scalars) loads as inert data", () => {
    // 'callbacks': {ModelCheckpoint: {'best_model_score': numpy scalar(dtype('f8'), b'...'), 'dirpath': 'logs'}}
    const dtype = Buffer.concat([op.global('numpy', 'dtype'), op.mark, op.str('f8'), op.newfalse, Buffer.from([0x88]), op.tuple, op.reduce]);
    const build = Buffer.concat([op.mark, op.int(3), op.str('<'), Buffer.from([0x4e, 0x4e, 0x4e]), op.int(-1), op.int(-1), op.int(0), op.tuple, Buffer.from([0x62])]);
    const bytes = Buffer.concat([op.global('_codecs', 'encode'), op.mark, op.str('\u0000\u0000\u0000\u0000\u0000\u0000\u00f0?'), op.str('latin1'), op.tuple, op.reduce]);
    const scalar = Buffer.concat([op.global('numpy.core.multiarray', 'scalar'), op.mark, dtype, build, bytes, op.tuple, op.reduce]);
    const callback = Buffer.concat([op.global('pytorch_lightning.callbacks.model_checkpoint', 'ModelCheckpoint'), op.emptyDict, op.mark, op.str('best_model_score'), scalar, op.str('dirpath'), op.str('logs'), op.setitems]);
    const extra = Buffer.concat([op.str('callbacks'), op.emptyDict, callback, op.setitem, op.str('epoch'), op.int(6)]);
    const file = write('lightning.ckpt', ckptBytes(referenceTensors(), { extra }));
    const a = loadSingleFile(file, configs);
    const b = loadSingleFile(SAFETENSORS, configs);
    try {
      expectSameParams(a.unet, b.unet, 'unet');
    } finally {
      disposeParams(a.unet, a.vae, a.textEncoder, b.unet, b.vae, b.textEncoder);
    }
  });
});

describe('unsafe and broken .ckpt files', () => {
  const marker = at('PWNED');
  /** data.pkl programs that would run `touch marker` if unpickled by Python's pickle. */
  const attacks: Record<string, Buffer> = {
    'posix.system': Buffer.concat([op.proto2, op.global('posix', 'system'), op.str(`touch ${marker}`), Buffer.from([0x85]), op.reduce, op.stop]),
    'os.system': Buffer.concat([op.proto2, op.global('os', 'system'), op.str(`touch ${marker}`), Buffer.from([0x85]), op.reduce, op.stop]),
    'builtins.eval': Buffer.concat([op.proto2, op.global('builtins', 'eval'), op.str(`open(${JSON.stringify(marker)}, 'w')`), Buffer.from([0x85]), op.reduce, op.stop]),
    'subprocess.Popen': Buffer.concat([op.proto2, op.global('subprocess', 'Popen'), op.mark, op.str('touch'), op.str(marker), Buffer.from([0x6c]), Buffer.from([0x85]), op.reduce, op.stop]),
    // Protocol 4's STACK_GLOBAL, hidden inside an otherwise ordinary state dict.
    'nt.system': Buffer.concat([
      Buffer.from([0x80, 0x04]),
      op.emptyDict,
      op.mark,
      op.str('state_dict'),
      op.emptyDict,
      op.str('model.x'),
      Buffer.from([0x8c, 2]),
      Buffer.from('nt'),
      Buffer.from([0x8c, 6]),
      Buffer.from('system'),
      Buffer.from([0x93]),
      op.str(`touch ${marker}`),
      Buffer.from([0x85]),
      op.reduce,
      op.setitem,
      op.setitems,
      op.stop,
    ]),
  };

  for (const [fn, pkl] of Object.entries(attacks)) {
    it(`a pickle calling ${fn} is refused, naming the file and the call, and nothing runs`, () => {
      const file = write(`evil-${fn}.ckpt`, storedZip({ 'archive/data.pkl': pkl, 'archive/version': Buffer.from('3\n') }));
      const e = painterError(() => loadModel(file, { config: TINY_SD_A }));
      expect(e.message).toContain(file);
      expect(e.message).toContain(`"${fn}"`);
      expect(e.message).toContain('refusing to load');
      expect(e.message).not.toContain('\n');
      expect(fs.existsSync(marker)).toBe(false);
      if (fn === 'posix.system') console.log('refusal:', e.message);
    });
  }

  it('on the command line: exit 1, one line naming the file, no stack, nothing run', async () => {
    const file = write('evil-cli.ckpt', storedZip({ 'archive/data.pkl': attacks['posix.system']!, 'archive/version': Buffer.from('3\n') }));
    const r = await runCli(['generate', 'a cat', '--model', file, '--config', TINY_SD_A, '--steps', '1', '--out', at('out')]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(file);
    expect(lines[0]).toContain('"posix.system"');
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('a truncated .ckpt is one clear line naming the file', () => {
    const bytes = fs.readFileSync(CKPT);
    for (const keep of [0, 100, Math.floor(bytes.length / 2), bytes.length - 30]) {
      const file = write(`truncated-${keep}.ckpt`, bytes.subarray(0, keep));
      const e = painterError(() => loadModel(file, { config: TINY_SD_A }));
      expect(e.message.startsWith(`${file}: `), e.message).toBe(true);
      expect(e.message).not.toContain('\n');
      expect(e.message).toMatch(/truncated|incomplete|not a ZIP|not a safetensors/);
    }
  });

  it('a damaged tensor in a .ckpt fails its CRC check when read, naming the file and entry', () => {
    const bytes = Buffer.from(fs.readFileSync(CKPT));
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    const file = write('damaged.ckpt', bytes);
    const e = painterError(() => loadModel(file, { config: TINY_SD_A }));
    expect(e.message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: entry "tiny-sd-a/data/\\d+" fails its CRC-32 check`));
  });

  it('fuzzed small checkpoints end in a clean read or a one-line error naming the file', () => {
    const seed = ckptBytes({ 'model.a': { shape: [2, 3], values: [1, 2, 3, 4, 5, 6] }, 'model.b': { shape: [4], values: [1, 2, 3, 4], storage: 'HalfStorage' } });
    let state = 12345;
    const rand = (n: number) => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return state % n;
    };
    let refused = 0;
    for (let i = 0; i < 300; i++) {
      const bytes = Buffer.from(seed);
      const kind = rand(3);
      let mutant: Buffer;
      if (kind === 0) {
        for (let j = 0; j <= rand(4); j++) bytes[rand(bytes.length)]! ^= 1 + rand(255);
        mutant = bytes;
      } else if (kind === 1) mutant = bytes.subarray(0, rand(bytes.length));
      else mutant = Buffer.concat([bytes.subarray(0, rand(bytes.length)), Buffer.alloc(1 + rand(8), rand(256))]);
      const file = write('fuzz.ckpt', mutant);
      try {
        const src = openWeightSource(file);
        try {
          for (const k of src.entries.keys()) src.read(k);
        } finally {
          src.close();
        }
      } catch (e) {
        expect(e, `mutant ${i}`).toBeInstanceOf(PainterError);
        expect((e as Error).message.startsWith(`${file}: `), (e as Error).message).toBe(true);
        expect((e as Error).message).not.toContain('\n');
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(100);
  });
});

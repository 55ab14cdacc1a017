/**
 * The module groups of a kohya/LyCORIS LoRA file (all keys `lora_unet_<module>.<part>`) turned
 * into adapters: which LyCORIS algorithm a module uses is told by its parts, as LyCORIS'
 * `weight_list`s define them —
 *
 * - LoRA / LoCon: `lora_down.weight`, `lora_up.weight`, optional `lora_mid.weight` (Tucker core of
 *   a conv LoCon);
 * - LoHa: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, optional `hada_t1` + `hada_t2`;
 * - LoKr: `lokr_w1` or `lokr_w1_a` + `lokr_w1_b`, `lokr_w2` or `lokr_w2_a` + `lokr_w2_b`,
 *   optional `lokr_t2`;
 * - any of them: `alpha` (scalar) and `dora_scale` (DoRA magnitude, [out, 1(, 1, 1)] or
 *   [1, in(, 1, 1)]).
 *
 * A part that does not belong with the others, or a missing one, is an error naming the key.
 */
import * as tf from '@tensorflow/tfjs';
import type { LoraAdapter, LoraComponent } from '../core/lora.js';
import type { DoraMagnitude } from '../core/lora-dora.js';
import type { LycorisAdapter } from '../core/lora-lycoris.js';
import { PainterError } from '../errors.js';
import { torchToTfjs } from './layout.js';

export interface RawTensor {
  shape: number[];
  data: Float32Array;
}

/** One module's parts: part name (the key's suffix) → [key, tensor]. */
export interface ModuleGroup {
  component: LoraComponent;
  module: string;
  parts: Map<string, [string, RawTensor]>;
}

/** The suffixes a kohya/LyCORIS key may end in. */
export const MODULE_PARTS = [
  'lora_down.weight',
  'lora_up.weight',
  'lora_mid.weight',
  'hada_w1_a',
  'hada_w1_b',
  'hada_w2_a',
  'hada_w2_b',
  'hada_t1',
  'hada_t2',
  'lokr_w1',
  'lokr_w1_a',
  'lokr_w1_b',
  'lokr_w2',
  'lokr_w2_a',
  'lokr_w2_b',
  'lokr_t2',
  'alpha',
  'dora_scale',
] as const;

type Algo = 'LoRA' | 'LoHa' | 'LoKr';
const ALGO_OF = (part: string): Algo | undefined => (part.startsWith('lora_') ? 'LoRA' : part.startsWith('hada_') ? 'LoHa' : part.startsWith('lokr_') ? 'LoKr' : undefined);

/** Everything created so far, for the caller to dispose when a later module fails. */
export interface Built {
  adapters: LoraAdapter[];
  lycoris: LycorisAdapter[];
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/** The DoRA magnitude and its axis from a LyCORIS dora_scale (1-D: per output channel, as PEFT). */
function doraOf(file: string, key: string, t: RawTensor): DoraMagnitude {
  const s = t.shape;
  const onesBut = (axis: number) => s.every((d, i) => i === axis || d === 1);
  const axis = s.length <= 1 || onesBut(0) ? 'out' : onesBut(1) ? 'in' : undefined;
  if (!axis) throw new PainterError(`${file}: ${JSON.stringify(key)} of shape ${shapeText(s)} is no DoRA magnitude (expected [out, 1, …] or [1, in, …])`);
  return { magnitude: tf.tensor1d(t.data), axis };
}

/** PyTorch layout → tfjs layout (Linear [a, b] → [b, a], Conv OIHW → HWIO). */
function toTfjs(t: RawTensor): tf.Tensor {
  const converted = torchToTfjs('lora.weight', t);
  return tf.tensor(converted.data, converted.shape, 'float32');
}

/** A factor as stored (PyTorch layout), optionally reshaped. */
function asStored(t: RawTensor, shape = t.shape): tf.Tensor {
  return tf.tensor(t.data, shape, 'float32');
}

/**
 * Builds one module's adapter into `out` (plain LoRA/LoCon into `adapters`, the rest into
 * `lycoris`). Shapes are checked against each other here and against the model in applyLora.
 */
export function buildModule(file: string, g: ModuleGroup, out: Built): void {
  const algos = new Set([...g.parts.keys()].map(ALGO_OF).filter((a): a is Algo => a !== undefined));
  const anyKey = [...g.parts.values()][0]![0];
  if (algos.size !== 1) {
    const what = algos.size === 0 ? 'only alpha/dora_scale, no weights' : `parts of ${[...algos].join(' and ')}`;
    throw new PainterError(`${file}: module ${JSON.stringify(g.module)} (${JSON.stringify(anyKey)}) has ${what}; the LoRA file is incomplete or damaged`);
  }
  const algo = [...algos][0]!;
  const get = (part: string) => g.parts.get(part);
  const need = (part: string): [string, RawTensor] => {
    const p = get(part);
    if (!p) throw new PainterError(`${file}: ${algo} module ${JSON.stringify(g.module)} (${JSON.stringify(anyKey)}) has no ${part}; the LoRA file is incomplete`);
    return p;
  };
  const bad = (key: string, why: string): never => {
    throw new PainterError(`${file}: ${JSON.stringify(key)}: ${why}`);
  };
  let alpha: number | undefined;
  const a = get('alpha');
  if (a) {
    if (a[1].data.length !== 1) bad(a[0], 'alpha must be a scalar');
    alpha = a[1].data[0]!;
  }
  const dora = get('dora_scale') ? doraOf(file, ...get('dora_scale')!) : undefined;
  const base = { component: g.component, module: g.module, ...(alpha === undefined ? {} : { alpha }), ...(dora ? { dora } : {}) };
  try {
    switch (algo) {
      case 'LoRA': {
        const [downKey, down] = need('lora_down.weight');
        const [, up] = need('lora_up.weight');
        const mid = get('lora_mid.weight');
        const rank = down.shape[0]!;
        if (mid) {
          // Tucker LoCon: down [r, in, 1, 1], mid [r, r, kh, kw], up [out, r, 1, 1].
          const [midKey, m] = mid;
          const ok = down.shape.length === 4 && up.shape.length === 4 && m.shape.length === 4 && m.shape[1] === rank && m.shape[0] === up.shape[1];
          if (!ok || down.shape[2] !== 1 || down.shape[3] !== 1 || up.shape[2] !== 1 || up.shape[3] !== 1) {
            bad(midKey, `down ${shapeText(down.shape)}, mid ${shapeText(m.shape)} and up ${shapeText(up.shape)} are not a Tucker LoCon (down [r, in, 1, 1], mid [r, r, kh, kw], up [out, r, 1, 1])`);
          }
          out.lycoris.push({ ...base, kind: 'locon-tucker', key: downKey, down: asStored(down, down.shape.slice(0, 2)), mid: asStored(m), up: asStored(up, up.shape.slice(0, 2)) });
          return;
        }
        const linear = down.shape.length === 2 && up.shape.length === 2;
        const conv = down.shape.length === 4 && up.shape.length === 4 && up.shape[2] === 1 && up.shape[3] === 1;
        if (!(linear || conv) || up.shape[1] !== rank) {
          bad(downKey, `${shapeText(down.shape)} and its up matrix ${shapeText(up.shape)} are not a LoRA pair (down [r, in] or [r, in, kh, kw], up [out, r] or [out, r, 1, 1])`);
        }
        out.adapters.push({ ...base, key: downKey, down: toTfjs(down), up: toTfjs(up) });
        return;
      }
      case 'LoHa': {
        const [w1aKey, w1a] = need('hada_w1_a');
        const [, w1b] = need('hada_w1_b');
        const [, w2a] = need('hada_w2_a');
        const [, w2b] = need('hada_w2_b');
        const t1 = get('hada_t1');
        const t2 = get('hada_t2');
        if (!t1 !== !t2) bad((t1 ?? t2)![0], 'a LoHa Tucker core needs both hada_t1 and hada_t2');
        const cores = t1 && t2 ? [t1[1], t2[1]] : undefined;
        const ok = cores
          ? // Tucker: w_a [r, out], w_b [r, in], t [r, r, kh, kw]
            [w1a, w1b, w2a, w2b].every((w) => w.shape.length === 2) &&
            cores.every((t) => t.shape.length === 4) &&
            cores[0]!.shape[0] === w1a.shape[0] && cores[0]!.shape[1] === w1b.shape[0] &&
            cores[1]!.shape[0] === w2a.shape[0] && cores[1]!.shape[1] === w2b.shape[0] &&
            w1a.shape[1] === w2a.shape[1] && w1b.shape[1] === w2b.shape[1] &&
            cores[0]!.shape.slice(2).join() === cores[1]!.shape.slice(2).join()
          : // w_a [out, r], w_b [r, in·kh·kw]
            w1a.shape.length === 2 && w2a.shape.length === 2 && w1b.shape.length >= 2 && w2b.shape.length >= 2 &&
            w1a.shape[1] === w1b.shape[0] && w2a.shape[1] === w2b.shape[0] && w1a.shape[0] === w2a.shape[0] &&
            w1b.shape.slice(1).join() === w2b.shape.slice(1).join();
        if (!ok) bad(w1aKey, `hada_w1_a ${shapeText(w1a.shape)}, hada_w1_b ${shapeText(w1b.shape)}, hada_w2_a ${shapeText(w2a.shape)}, hada_w2_b ${shapeText(w2b.shape)}${cores ? `, hada_t1/t2 ${shapeText(cores[0]!.shape)}/${shapeText(cores[1]!.shape)}` : ''} do not form a LoHa module`);
        out.lycoris.push({
          ...base,
          kind: 'loha',
          key: w1aKey,
          w1a: asStored(w1a),
          w1b: asStored(w1b),
          w2a: asStored(w2a),
          w2b: asStored(w2b),
          ...(cores ? { t1: asStored(cores[0]!), t2: asStored(cores[1]!) } : {}),
        });
        return;
      }
      case 'LoKr': {
        const key = (get('lokr_w1') ?? get('lokr_w1_a') ?? get('lokr_w2') ?? get('lokr_w2_a') ?? [anyKey])[0];
        const pair = (n: 1 | 2) => {
          const full = get(`lokr_w${n}`);
          const fa = get(`lokr_w${n}_a`);
          const fb = get(`lokr_w${n}_b`);
          if (full && (fa || fb)) bad(full[0], `a LoKr module has either lokr_w${n} or lokr_w${n}_a/_b, not both`);
          if (!full && !(fa && fb)) need(fa ? `lokr_w${n}_b` : fb ? `lokr_w${n}_a` : `lokr_w${n}`);
          return { full: full?.[1], a: fa?.[1], b: fb?.[1] };
        };
        const w1 = pair(1);
        const w2 = pair(2);
        const t2 = get('lokr_t2');
        if (t2 && !w2.a) bad(t2[0], 'lokr_t2 needs lokr_w2_a and lokr_w2_b');
        const mat = (t?: RawTensor) => t === undefined || t.shape.length === 2;
        let ok = mat(w1.full) && mat(w1.a) && mat(w1.b) && (!w1.a || w1.a.shape[1] === w1.b!.shape[0]);
        if (w2.full) ok &&= w2.full.shape.length === 2 || w2.full.shape.length === 4;
        else if (t2) ok &&= mat(w2.a) && mat(w2.b) && t2[1].shape.length === 4 && t2[1].shape[0] === w2.a!.shape[0] && t2[1].shape[1] === w2.b!.shape[0];
        else ok &&= mat(w2.a) && w2.b!.shape.length >= 2 && w2.a!.shape[1] === w2.b!.shape[0];
        if (!ok) bad(key, 'the lokr_* factors do not form a LoKr module (w1 [a, c] or w1_a [a, r] @ w1_b [r, c]; w2 [b, d(, kh, kw)], w2_a [b, r] @ w2_b [r, d·kh·kw], or with lokr_t2 [r, r, kh, kw]: w2_a [r, b], w2_b [r, d])');
        const opt = (name: string, t?: RawTensor) => (t ? { [name]: asStored(t) } : {});
        out.lycoris.push({
          ...base,
          kind: 'lokr',
          key,
          ...opt('w1', w1.full),
          ...opt('w1a', w1.a),
          ...opt('w1b', w1.b),
          ...opt('w2', w2.full),
          ...opt('w2a', w2.a),
          ...opt('w2b', w2.b),
          ...opt('t2', t2?.[1]),
        });
        return;
      }
    }
  } catch (e) {
    dora?.magnitude.dispose();
    throw e;
  }
}

/**
 * Reproduces the interop reference generations (fixtures/interop/tiny-sd-a, INTEROP-README §3):
 * diffusers' StableDiffusionPipeline with DDIM, 10 steps, guidance 7.5, negative prompt '',
 * latents = init_latents; and measures painter's errors against a reference case.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { expandPrompt } from '../src/core/embeddings.js';
import type { StableDiffusion } from '../src/core/model.js';
import { decodeLatents, denoiseAll, encodePrompts, promptIds } from '../src/core/pipeline/text-to-image.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { crc32 } from '../src/io/zip.js';
import { FIXTURES, loadReference, nchwToNhwc, nhwcToNchw, ref, relError } from './helpers.js';

export const INTEROP = path.join(FIXTURES, 'interop', 'tiny-sd-a');

export function loadInteropReference(): Map<string, tf.Tensor> {
  return loadReference(path.join(INTEROP, 'reference', 'interop.safetensors'));
}

export interface Generation {
  /** Prompt after diffusers' maybe_convert_prompt. */
  prompt: string;
  ids: number[];
  negativeIds: number[];
  promptEmbeds: tf.Tensor3D;
  negativeEmbeds: tf.Tensor3D;
  /** NHWC final latents (undefined when only the prompt was encoded). */
  latents?: tf.Tensor4D;
  image?: tf.Tensor4D;
}

/** Encodes the prompt as the pipeline does and, with `sample`, runs the 10-step DDIM generation. */
export function generate(model: StableDiffusion, prompt: string, reference: Map<string, tf.Tensor>, sample = true): Generation {
  // promptIds/encodePrompts expand multi-vector tokens themselves, as encode_prompt does.
  const expanded = expandPrompt(prompt, model.tokenizer);
  const ids = tf.tidy(() => Array.from(promptIds(model, [prompt]).dataSync()));
  const negativeIds = tf.tidy(() => Array.from(promptIds(model, ['']).dataSync()));
  const promptEmbeds = encodePrompts(model, [prompt]);
  const negativeEmbeds = encodePrompts(model, ['']);
  const g: Generation = { prompt: expanded, ids, negativeIds, promptEmbeds, negativeEmbeds };
  if (!sample) return g;
  const scheduler = createScheduler('ddim', model.scheduler, 10);
  const init = nchwToNhwc(ref(reference, 'init_latents'));
  g.latents = denoiseAll(model, { scheduler, promptEmbeds, negativeEmbeds, guidance: 7.5, latents: init });
  g.image = decodeLatents(model, g.latents);
  init.dispose();
  scheduler.dispose();
  return g;
}

export interface CaseErrors {
  idsEqual: boolean;
  negativeIdsEqual: boolean;
  /** Relative errors max|a−b| / max|b|. */
  promptEmbeds: number;
  negativeEmbeds: number;
  latents?: number;
  /** Largest per-pixel difference of the [0, 1] image, in 1/255 steps. */
  imagePixels?: number;
}

export function compareCase(g: Generation, reference: Map<string, tf.Tensor>, name: string): CaseErrors {
  const refIds = Array.from(ref(reference, `${name}.input_ids`).dataSync());
  const refNegIds = Array.from(ref(reference, 'negative_input_ids').dataSync());
  const errors: CaseErrors = {
    idsEqual: refIds.join() === g.ids.join(),
    negativeIdsEqual: refNegIds.join() === g.negativeIds.join(),
    promptEmbeds: relError(g.promptEmbeds, ref(reference, `${name}.prompt_embeds`)),
    negativeEmbeds: relError(g.negativeEmbeds, ref(reference, `${name}.negative_prompt_embeds`)),
  };
  if (g.latents && g.image) {
    errors.latents = tf.tidy(() => relError(nhwcToNchw(g.latents!), ref(reference, `${name}.latents`)));
    errors.imagePixels = tf.tidy(() => tf.max(tf.abs(tf.sub(g.image!, ref(reference, `${name}.image`)))).dataSync()[0]! * 255);
  }
  return errors;
}

export function disposeGeneration(g: Generation): void {
  tf.dispose([g.promptEmbeds, g.negativeEmbeds]);
  if (g.latents) g.latents.dispose();
  if (g.image) g.image.dispose();
}

/** A stored (uncompressed) ZIP archive, as torch.save writes. */
export function storedZip(entries: Record<string, Buffer>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(entries)) {
    const n = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt32LE(crc32(data), 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt32LE(crc32(data), 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(n.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, n, data);
    centrals.push(central, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(Object.keys(entries).length, 8);
  eocd.writeUInt16LE(Object.keys(entries).length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/**
 * A torch.save archive of {key: float32 tensor} (pickle protocol 2, as torch 1.13 writes it),
 * for files the fixtures lack (diffusers' .bin, LoRA .bin). `transposed` stores each 2-D tensor
 * as a transposed view of a [cols, rows] storage, to exercise strided rebuilds.
 */
export function torchSave(name: string, tensors: Record<string, { shape: number[]; data: Float32Array }>, transposed = false): Buffer {
  const parts: Buffer[] = [Buffer.from([0x80, 0x02, 0x7d])]; // PROTO 2, EMPTY_DICT
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return Buffer.concat([Buffer.from([0x58]), len, b]); // BINUNICODE
  };
  const int = (n: number) => {
    const b = Buffer.alloc(5);
    b[0] = 0x4a; // BININT
    b.writeInt32LE(n, 1);
    return b;
  };
  const tuple = (items: Buffer[]) => Buffer.concat([Buffer.from([0x28]), ...items, Buffer.from([0x74])]); // MARK … TUPLE
  const entries: Record<string, Buffer> = {};
  let key = 0;
  parts.push(Buffer.from([0x28])); // MARK for SETITEMS
  for (const [k, t] of Object.entries(tensors)) {
    const numel = t.data.length;
    let data = t.data;
    let stride = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    if (transposed && t.shape.length === 2) {
      const [r, c] = t.shape as [number, number];
      data = new Float32Array(numel);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) data[j * r + i] = t.data[i * c + j]!;
      stride = [1, r];
    }
    entries[`${name}/data/${key}`] = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    parts.push(
      str(k),
      Buffer.from('ctorch._utils\n_rebuild_tensor_v2\n'),
      Buffer.from([0x28]),
      tuple([str('storage'), Buffer.from('ctorch\nFloatStorage\n'), str(String(key)), str('cpu'), int(numel)]),
      Buffer.from([0x51]), // BINPERSID
      int(0),
      tuple(t.shape.map(int)),
      tuple(stride.map(int)),
      Buffer.from([0x89]), // NEWFALSE
      Buffer.from('ccollections\nOrderedDict\n'),
      Buffer.from([0x29, 0x52, 0x74, 0x52]), // EMPTY_TUPLE REDUCE TUPLE REDUCE
    );
    key++;
  }
  parts.push(Buffer.from([0x75, 0x2e])); // SETITEMS STOP
  return storedZip({ [`${name}/data.pkl`]: Buffer.concat(parts), ...entries, [`${name}/version`]: Buffer.from('3\n') });
}

/**
 * Original single-file Stable Diffusion checkpoints (CompVis / AUTOMATIC1111 layout): views of
 * their components under diffusers names, loading them into painter's weights, and the inverse
 * mapping for writing them. Both directions work on PyTorch-layout tensors read one at a time,
 * so `painter convert` moves a checkpoint between layouts bit for bit without tfjs.
 */
import { CLIP_TEXT_IGNORED_KEYS, clipTextParamShapes, type ClipTextConfig } from '../core/models/clip-text.js';
import { unetParamShapes, type UNetConfig } from '../core/models/unet.js';
import { vaeParamShapes, type VaeConfig } from '../core/models/vae.js';
import type { Params } from '../core/params.js';
import { hostParams } from '../core/row-chunks.js';
import { PainterError } from '../errors.js';
import { tfjsToTorch } from './layout.js';
import { loadFromSources } from './load-weights.js';
import { openWeightSource } from './open-weights.js';
import { writeSafetensors, type HostTensor, type SafetensorsDtype, type TensorToWrite } from './safetensors.js';
import {
  CLIP_PREFIX,
  clipKeyToDiffusers,
  keyConverter,
  OPENCLIP_PREFIX,
  openClipToDiffusers,
  UNET_PREFIX,
  unetBlockMaps,
  VAE_PREFIX,
  vaeBlockMaps,
  type Arch,
} from './single-file-keys.js';
import { weightView, type ViewEntry, type WeightEntry, type WeightSource } from './weight-source.js';

export type { Arch } from './single-file-keys.js';

export interface PipelineConfigs {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
}

export interface PipelineParams {
  unet: Params;
  vae: Params;
  textEncoder: Params;
}

/** A pipeline's weight-bearing components, by their diffusers folder names. */
export type Component = 'unet' | 'vae' | 'text_encoder';
export const COMPONENTS: readonly Component[] = ['unet', 'vae', 'text_encoder'];

/** Each component's weights under diffusers names, in PyTorch layout. */
export type ComponentSources = Record<Component, WeightSource>;

/** The text-encoder layout a checkpoint's keys show: OpenCLIP (SD 2.x) or Hugging Face CLIP (SD 1.x). */
export function archOfKeys(keys: Iterable<string>): Arch | undefined {
  const all = [...keys];
  if (all.some((k) => k.startsWith(OPENCLIP_PREFIX))) return 'sd2';
  if (all.some((k) => k.startsWith(CLIP_PREFIX))) return 'sd1';
  return undefined;
}

/** SD 2.x files carry the OpenCLIP text encoder; SD 1.x the Hugging Face CLIP one. */
export function detectArch(file: string): Arch | undefined {
  const f = openWeightSource(file);
  try {
    return archOfKeys(f.entries.keys());
  } finally {
    f.close();
  }
}

// LDM's VAE attention uses 1×1 convolutions where diffusers has Linear layers.
const VAE_ATTN_LINEAR = /\.mid_block\.attentions\.0\.to_(q|k|v|out\.0)\.weight$/;

/** OpenCLIP entries CLIPTextModel has no use for: projection, logit scale, the dropped last layer. */
function openClipUnused(rest: string, numLayers: number): boolean {
  if (/^(text_projection|logit_scale|attn_mask)$/.test(rest)) return true;
  const m = /^transformer\.resblocks\.(\d+)\./.exec(rest);
  return m !== null && Number(m[1]) >= numLayers;
}

/** Part `i` of `n` equal parts of a tensor along its first axis (OpenCLIP's fused q/k/v). */
function rowPart(file: string, key: string, t: HostTensor, n: number, i: number): HostTensor {
  if (t.dtype === 'I32' || t.dtype === 'I64') throw new PainterError(`${file}: weight "${key}" is an integer tensor; expected floats`);
  const rows = t.shape[0]! / n;
  const inner = t.data.length / t.shape[0]!;
  return { dtype: t.dtype, shape: [rows, ...t.shape.slice(1)], data: t.data.slice(i * rows * inner, (i + 1) * rows * inner) };
}

/**
 * The components of a single-file checkpoint as diffusers-named views for `configs` (PyTorch
 * layout, read on demand from `src`). A key the configs have no name for keeps its file name,
 * so strict loading reports it as unexpected; entries no diffusers model holds (EMA copies,
 * OpenCLIP's projection and dropped last layer, CLIP's position_ids) are left out.
 */
export function singleFileViews(src: WeightSource, configs: PipelineConfigs, arch: Arch): ComponentSources {
  const unetKeys = keyConverter(unetBlockMaps(configs.unet));
  const vaeKeys = keyConverter(vaeBlockMaps(configs.vae));
  const layers = configs.textEncoder.num_hidden_layers;
  const views: Record<Component, Map<string, ViewEntry>> = { unet: new Map(), vae: new Map(), text_encoder: new Map() };
  const add = (component: Component, key: string, fileKey: string, e: WeightEntry, read: () => HostTensor = () => src.read(fileKey)) => {
    if (views[component].has(key)) throw new PainterError(`${src.path}: weights "${views[component].get(key)!.fileKey}" and "${fileKey}" both give ${component} weight "${key}"`);
    views[component].set(key, { dtype: e.dtype, shape: e.shape, read, fileKey });
  };
  for (const [k, e] of src.entries) {
    if (k.startsWith(UNET_PREFIX)) {
      add('unet', unetKeys.toDiffusers(k.slice(UNET_PREFIX.length)) ?? k, k, e);
    } else if (k.startsWith(VAE_PREFIX)) {
      const name = vaeKeys.toDiffusers(k.slice(VAE_PREFIX.length));
      if (name && VAE_ATTN_LINEAR.test(name) && e.shape.length === 4) {
        const shape = e.shape.slice(0, 2);
        add('vae', name, k, { dtype: e.dtype, shape }, () => ({ ...src.read(k), shape }));
      } else add('vae', name ?? k, k, e);
    } else if (arch === 'sd2' && k.startsWith(OPENCLIP_PREFIX)) {
      const rest = k.slice(OPENCLIP_PREFIX.length);
      if (openClipUnused(rest, layers)) continue;
      const names = openClipToDiffusers(rest, layers) ?? [k];
      if (names.length === 1) add('text_encoder', names[0]!, k, e);
      else names.forEach((name, i) => add('text_encoder', name, k, { dtype: e.dtype, shape: [e.shape[0]! / names.length, ...e.shape.slice(1)] }, () => rowPart(src.path, k, src.read(k), names.length, i)));
    } else if (arch === 'sd1' && k.startsWith(CLIP_PREFIX)) {
      const name = clipKeyToDiffusers(k.slice(CLIP_PREFIX.length));
      if (!CLIP_TEXT_IGNORED_KEYS.test(name)) add('text_encoder', name, k, e);
    }
  }
  return { unet: weightView(src.path, views.unet), vae: weightView(src.path, views.vae), text_encoder: weightView(src.path, views.text_encoder) };
}

export interface SingleFileOptions {
  /** Load the UNet from the checkpoint's EMA copy (`model_ema.*`), as diffusers' extract_ema. */
  ema?: boolean;
}

/** Reads a single-file checkpoint (`.safetensors` or `.ckpt`) into diffusers-named weights for the given configs. */
export function loadSingleFile(file: string, configs: PipelineConfigs, arch?: Arch, opts: SingleFileOptions = {}): PipelineParams {
  const src = openWeightSource(file, { ema: opts.ema });
  const params: Partial<PipelineParams> = {};
  try {
    const detected = archOfKeys(src.entries.keys());
    if (!detected && !arch) {
      throw new PainterError(`${file}: no text encoder found (no ${CLIP_PREFIX} or ${OPENCLIP_PREFIX} keys); is this a Stable Diffusion checkpoint?`);
    }
    if (arch && detected && arch !== detected) {
      throw new PainterError(`${file}: --arch ${arch} given, but the checkpoint holds an ${detected === 'sd2' ? 'OpenCLIP (SD 2.x)' : 'HF CLIP (SD 1.x)'} text encoder; use --arch ${detected}`);
    }
    const views = singleFileViews(src, configs, (arch ?? detected)!);
    params.unet = loadFromSources([views.unet], unetParamShapes(configs.unet), 'unet');
    params.vae = loadFromSources([views.vae], vaeParamShapes(configs.vae), 'vae');
    params.textEncoder = loadFromSources([views.text_encoder], clipTextParamShapes(configs.textEncoder), 'text_encoder');
    return params as PipelineParams;
  } catch (e) {
    for (const p of Object.values(params)) for (const t of p.values()) t.dispose();
    throw e;
  } finally {
    src.close();
  }
}

/** A tensor read on demand, stored as `dtype`. */
function lazy(dtype: SafetensorsDtype, shape: number[], read: () => HostTensor): TensorToWrite {
  return { dtype, shape, data: () => read().data };
}

/**
 * Single-file (LDM) tensors of diffusers-named components (the inverse of singleFileViews):
 * UNet and VAE in LDM naming, the text encoder as HF CLIP (sd1) or OpenCLIP (sd2) with q/k/v
 * fused. `dtype` picks each tensor's storage type; the values are read when written.
 */
export function singleFileTensors(parts: ComponentSources, configs: PipelineConfigs, arch: Arch, dtype: (e: WeightEntry) => SafetensorsDtype): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  const rename = (component: Component, prefix: string, toLdm: (k: string) => string | undefined) => {
    const src = parts[component];
    for (const [k, e] of src.entries) {
      const ldm = toLdm(k);
      if (ldm === undefined) throw new PainterError(`${src.path}: ${component} weight "${k}" has no single-file name; the configs do not describe these weights`);
      const shape = component === 'vae' && VAE_ATTN_LINEAR.test(k) && e.shape.length === 2 ? [...e.shape, 1, 1] : e.shape;
      out.set(prefix + ldm, lazy(dtype(e), shape, () => ({ ...src.read(k), shape })));
    }
  };
  rename('unet', UNET_PREFIX, keyConverter(unetBlockMaps(configs.unet)).toLdm);
  rename('vae', VAE_PREFIX, keyConverter(vaeBlockMaps(configs.vae)).toLdm);
  if (arch === 'sd1') rename('text_encoder', CLIP_PREFIX, (k) => k);
  else openClipTensors(parts.text_encoder, configs.textEncoder, dtype, out);
  return out;
}

/** HF CLIP names → OpenCLIP's (SD 2.x), one resblock per layer, q/k/v fused into in_proj. */
function openClipTensors(src: WeightSource, c: ClipTextConfig, dtype: (e: WeightEntry) => SafetensorsDtype, out: Map<string, TensorToWrite>): void {
  const entry = (k: string): WeightEntry => {
    const e = src.entries.get(k);
    if (!e) throw new PainterError(`${src.path}: text_encoder weight "${k}" missing`);
    return e;
  };
  const put = (key: string, from: string) => out.set(OPENCLIP_PREFIX + key, lazy(dtype(entry(from)), entry(from).shape, () => src.read(from)));
  put('token_embedding.weight', 'text_model.embeddings.token_embedding.weight');
  put('positional_embedding', 'text_model.embeddings.position_embedding.weight');
  put('ln_final.weight', 'text_model.final_layer_norm.weight');
  put('ln_final.bias', 'text_model.final_layer_norm.bias');
  const names: [string, string][] = [
    ['layer_norm1', 'ln_1'],
    ['layer_norm2', 'ln_2'],
    ['mlp.fc1', 'mlp.c_fc'],
    ['mlp.fc2', 'mlp.c_proj'],
    ['self_attn.out_proj', 'attn.out_proj'],
  ];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const hf = `text_model.encoder.layers.${l}.`;
    const oc = `transformer.resblocks.${l}.`;
    for (const [from, to] of names) for (const s of ['weight', 'bias']) put(`${oc}${to}.${s}`, `${hf}${from}.${s}`);
    for (const s of ['weight', 'bias']) {
      const parts = ['q_proj', 'k_proj', 'v_proj'].map((q) => `${hf}self_attn.${q}.${s}`);
      const first = entry(parts[0]!);
      const fused = () => {
        const tensors = parts.map((k) => src.read(k).data as Float32Array);
        const data = new Float32Array(tensors.reduce((n, t) => n + t.length, 0));
        tensors.reduce((o, t) => (data.set(t, o), o + t.length), 0);
        return data;
      };
      out.set(`${OPENCLIP_PREFIX}${oc}attn.in_proj_${s}`, { dtype: dtype(first), shape: [first.shape[0]! * 3, ...first.shape.slice(1)], data: fused });
    }
  }
}

/** painter weights (tfjs layout) as diffusers-named PyTorch-layout sources, read into host memory. */
export async function paramSources(params: PipelineParams): Promise<ComponentSources> {
  const source = async (component: Component, p: Params): Promise<WeightSource> => {
    const view = new Map<string, ViewEntry>();
    for (const [k, t] of await hostParams(p)) {
      const torch = tfjsToTorch(k, t);
      view.set(k, { dtype: 'F32', shape: torch.shape, read: () => ({ dtype: 'F32', ...torch }), fileKey: k });
    }
    return weightView(`painter ${component} weights`, view);
  };
  return { unet: await source('unet', params.unet), vae: await source('vae', params.vae), text_encoder: await source('text_encoder', params.textEncoder) };
}

/**
 * Writes painter weights as one single-file checkpoint (the inverse of loadSingleFile), float32.
 * `metadata` (e.g. singleFileMetadata's configs) goes into the file's `__metadata__`.
 */
export async function writeSingleFile(file: string, params: PipelineParams, configs: PipelineConfigs, arch: Arch = 'sd1', metadata?: Record<string, string>): Promise<void> {
  await writeSafetensors(file, singleFileTensors(await paramSources(params), configs, arch, () => 'F32'), metadata);
}

/**
 * Original single-file Stable Diffusion checkpoints (CompVis / AUTOMATIC1111 layout): loading
 * into painter's diffusers-named weights, and writing them back out.
 */
import * as tf from '@tensorflow/tfjs';
import { CLIP_TEXT_IGNORED_KEYS, type ClipTextConfig } from '../core/models/clip-text.js';
import type { UNetConfig } from '../core/models/unet.js';
import { unetParamShapes } from '../core/models/unet.js';
import { clipTextParamShapes } from '../core/models/clip-text.js';
import { vaeParamShapes, type VaeConfig } from '../core/models/vae.js';
import type { Params } from '../core/params.js';
import { hostParams } from '../core/row-chunks.js';
import { PainterError } from '../errors.js';
import { tfjsToTorch, type FloatArrayTensor } from './layout.js';
import { loadWeights } from './load-weights.js';
import { closeSafetensors, openSafetensors, writeSafetensors, type TensorToWrite } from './safetensors.js';
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
} from './single-file-keys.js';

export type Arch = 'sd1' | 'sd2';

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

/** SD 2.x files carry the OpenCLIP text encoder; SD 1.x the Hugging Face CLIP one. */
export function detectArch(file: string): Arch | undefined {
  const f = openSafetensors(file);
  try {
    const keys = [...f.entries.keys()];
    if (keys.some((k) => k.startsWith(OPENCLIP_PREFIX))) return 'sd2';
    if (keys.some((k) => k.startsWith(CLIP_PREFIX))) return 'sd1';
    return undefined;
  } finally {
    closeSafetensors(f);
  }
}

const VAE_ATTN_LINEAR = /\.mid_block\.attentions\.0\.to_(q|k|v|out\.0)\.weight$/;

/** Reads a single-file checkpoint into diffusers-named weights for the given configs. */
export function loadSingleFile(file: string, configs: PipelineConfigs, arch?: Arch): PipelineParams {
  const detected = detectArch(file);
  if (!detected && !arch) {
    throw new PainterError(`${file}: no text encoder found (no ${CLIP_PREFIX} or ${OPENCLIP_PREFIX} keys); is this a Stable Diffusion checkpoint?`);
  }
  if (arch && detected && arch !== detected) {
    throw new PainterError(`${file}: --arch ${arch} given, but the checkpoint holds an ${detected === 'sd2' ? 'OpenCLIP (SD 2.x)' : 'HF CLIP (SD 1.x)'} text encoder; use --arch ${detected}`);
  }
  const unetKeys = keyConverter(unetBlockMaps(configs.unet));
  const vaeKeys = keyConverter(vaeBlockMaps(configs.vae));
  const outside = (prefix: string) => (k: string) => !k.startsWith(prefix);
  const params: Partial<PipelineParams> = {};
  try {
    params.unet = loadWeights([file], unetParamShapes(configs.unet), 'unet', {
      ignore: outside(UNET_PREFIX),
      mapKey: (k) => unetKeys.toDiffusers(k.slice(UNET_PREFIX.length)),
    });
    params.vae = loadWeights([file], vaeParamShapes(configs.vae), 'vae', {
      ignore: outside(VAE_PREFIX),
      mapKey: (k) => vaeKeys.toDiffusers(k.slice(VAE_PREFIX.length)),
      // LDM's VAE attention uses 1×1 convolutions where diffusers has Linear layers.
      transform: (k, t) => [VAE_ATTN_LINEAR.test(vaeKeys.toDiffusers(k.slice(VAE_PREFIX.length)) ?? '') && t.shape.length === 4 ? { shape: t.shape.slice(0, 2), data: t.data } : t],
    });
    const text = configs.textEncoder;
    if ((arch ?? detected) === 'sd2') {
      params.textEncoder = loadWeights([file], clipTextParamShapes(text), 'text_encoder', {
        ignore: (k) => outside(OPENCLIP_PREFIX)(k) || openClipUnused(k.slice(OPENCLIP_PREFIX.length), text.num_hidden_layers),
        mapKey: (k) => openClipToDiffusers(k.slice(OPENCLIP_PREFIX.length), text.num_hidden_layers),
        transform: (_k, t, count) => (count === 3 ? splitRows(t, 3) : [t]),
      });
    } else {
      params.textEncoder = loadWeights([file], clipTextParamShapes(text), 'text_encoder', {
        ignore: (k) => outside(CLIP_PREFIX)(k) || CLIP_TEXT_IGNORED_KEYS.test(clipKeyToDiffusers(k.slice(CLIP_PREFIX.length))),
        mapKey: (k) => clipKeyToDiffusers(k.slice(CLIP_PREFIX.length)),
      });
    }
    return params as PipelineParams;
  } catch (e) {
    for (const p of Object.values(params)) for (const t of p.values()) t.dispose();
    throw e;
  }
}

/** OpenCLIP entries CLIPTextModel has no use for: projection, logit scale, the dropped last layer. */
function openClipUnused(rest: string, numLayers: number): boolean {
  if (/^(text_projection|logit_scale|attn_mask)$/.test(rest)) return true;
  const m = /^transformer\.resblocks\.(\d+)\./.exec(rest);
  return m !== null && Number(m[1]) >= numLayers;
}

/** Splits a tensor into `n` equal parts along its first axis (OpenCLIP's fused q/k/v). */
function splitRows(t: FloatArrayTensor, n: number): FloatArrayTensor[] {
  const rows = t.shape[0]! / n;
  const inner = t.data.length / t.shape[0]!;
  return Array.from({ length: n }, (_, i) => ({
    shape: [rows, ...t.shape.slice(1)],
    data: t.data.slice(i * rows * inner, (i + 1) * rows * inner),
  }));
}

/** Weights as host arrays in tfjs layout, read with `await data()` (a GPU backend has no synchronous read). */
type HostParams = Map<string, FloatArrayTensor>;

async function toHost(params: Params): Promise<HostParams> {
  return hostParams(params);
}

/**
 * Writes painter weights as one single-file checkpoint (the inverse of loadSingleFile):
 * UNet and VAE in LDM naming, the text encoder as HF CLIP (sd1) or OpenCLIP (sd2).
 */
export async function writeSingleFile(file: string, params: PipelineParams, configs: PipelineConfigs, arch: Arch = 'sd1'): Promise<void> {
  const out = new Map<string, TensorToWrite>();
  const unetKeys = keyConverter(unetBlockMaps(configs.unet));
  const vaeKeys = keyConverter(vaeBlockMaps(configs.vae));
  const put = (key: string, t: FloatArrayTensor) => out.set(key, { dtype: 'F32', shape: t.shape, data: t.data });
  for (const [k, t] of await toHost(params.unet)) {
    const ldm = unetKeys.toLdm(k);
    if (!ldm) throw new Error(`no single-file name for unet weight "${k}"`);
    put(UNET_PREFIX + ldm, tfjsToTorch(k, t));
  }
  for (const [k, t] of await toHost(params.vae)) {
    const ldm = vaeKeys.toLdm(k);
    if (!ldm) throw new Error(`no single-file name for vae weight "${k}"`);
    const torch = tfjsToTorch(k, t);
    put(VAE_PREFIX + ldm, VAE_ATTN_LINEAR.test(k) ? { shape: [...torch.shape, 1, 1], data: torch.data } : torch);
  }
  const text = await toHost(params.textEncoder);
  if (arch === 'sd1') {
    for (const [k, t] of text) put(CLIP_PREFIX + k, tfjsToTorch(k, t));
  } else {
    writeOpenClip(text, configs.textEncoder, put);
  }
  await writeSafetensors(file, out);
}

function writeOpenClip(p: HostParams, c: ClipTextConfig, put: (key: string, t: FloatArrayTensor) => void): void {
  const get = (k: string) => {
    const t = p.get(k);
    if (!t) throw new Error(`missing text encoder weight "${k}"`);
    return tfjsToTorch(k, t);
  };
  put(`${OPENCLIP_PREFIX}token_embedding.weight`, get('text_model.embeddings.token_embedding.weight'));
  put(`${OPENCLIP_PREFIX}positional_embedding`, get('text_model.embeddings.position_embedding.weight'));
  put(`${OPENCLIP_PREFIX}ln_final.weight`, get('text_model.final_layer_norm.weight'));
  put(`${OPENCLIP_PREFIX}ln_final.bias`, get('text_model.final_layer_norm.bias'));
  const names: [string, string][] = [
    ['layer_norm1', 'ln_1'],
    ['layer_norm2', 'ln_2'],
    ['mlp.fc1', 'mlp.c_fc'],
    ['mlp.fc2', 'mlp.c_proj'],
    ['self_attn.out_proj', 'attn.out_proj'],
  ];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const hf = `text_model.encoder.layers.${l}.`;
    const oc = `${OPENCLIP_PREFIX}transformer.resblocks.${l}.`;
    for (const [from, to] of names) for (const s of ['weight', 'bias']) put(`${oc}${to}.${s}`, get(`${hf}${from}.${s}`));
    for (const s of ['weight', 'bias']) {
      const parts = ['q_proj', 'k_proj', 'v_proj'].map((q) => get(`${hf}self_attn.${q}.${s}`));
      const data = new Float32Array(parts.reduce((n, t) => n + t.data.length, 0));
      let o = 0;
      for (const t of parts) {
        data.set(t.data, o);
        o += t.data.length;
      }
      put(`${oc}attn.in_proj_${s}`, { shape: [parts[0]!.shape[0]! * 3, ...parts[0]!.shape.slice(1)], data });
    }
  }
}

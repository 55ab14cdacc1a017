/**
 * Writes a pipeline as a diffusers folder, as `StableDiffusionPipeline.save_pretrained` lays it
 * out (model_index.json, configs with _class_name, weights in PyTorch layout), so diffusers,
 * painter and other tools load it. The folder is built under a temporary name and renamed into
 * place, so an interrupted save never leaves a half-written model.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StableDiffusion } from '../core/model.js';
import type { Params } from '../core/params.js';
import { hostParams } from '../core/row-chunks.js';
import { PainterError } from '../errors.js';
import { tfjsToTorch } from './layout.js';
import { writeSafetensors, type TensorToWrite } from './safetensors.js';
import { saveTokenizer } from './save-tokenizer.js';
import { writeBytesAtomic } from './atomic.js';

export const DIFFUSERS_VERSION = '0.30.3';

export interface SaveModelOptions {
  /** Store weights as float16 (`*.safetensors` with F16 tensors); default float32. */
  half?: boolean;
  /** Replace an existing folder (it is swapped out only after the new one is complete). */
  overwrite?: boolean;
}

export async function writeParams(file: string, params: Params, half = false): Promise<void> {
  const out = new Map<string, TensorToWrite>();
  for (const [key, t] of await hostParams(params)) {
    const torch = tfjsToTorch(key, t);
    out.set(key, { dtype: half ? 'F16' : 'F32', shape: torch.shape, data: torch.data });
  }
  await writeSafetensors(file, out, { format: 'pt' });
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await writeBytesAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

function stripPrivate(config: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith('_')));
}

export async function saveModel(model: StableDiffusion, dir: string, opts: SaveModelOptions = {}): Promise<void> {
  if (fs.existsSync(dir) && !opts.overwrite) throw new PainterError(`${dir}: already exists; choose another output folder or remove it`);
  const tmp = `${dir}.partial-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await writeJson(path.join(tmp, 'model_index.json'), {
      _class_name: 'StableDiffusionPipeline',
      _diffusers_version: DIFFUSERS_VERSION,
      feature_extractor: [null, null],
      image_encoder: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ['diffusers', model.scheduler._class_name ?? 'PNDMScheduler'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    });
    await writeJson(path.join(tmp, 'unet', 'config.json'), { _class_name: 'UNet2DConditionModel', _diffusers_version: DIFFUSERS_VERSION, ...stripPrivate(model.unet.config) });
    await writeParams(path.join(tmp, 'unet', 'diffusion_pytorch_model.safetensors'), model.unet.params, opts.half);
    await writeJson(path.join(tmp, 'vae', 'config.json'), { _class_name: 'AutoencoderKL', _diffusers_version: DIFFUSERS_VERSION, ...stripPrivate(model.vae.config) });
    await writeParams(path.join(tmp, 'vae', 'diffusion_pytorch_model.safetensors'), model.vae.params, opts.half);
    await writeJson(path.join(tmp, 'text_encoder', 'config.json'), {
      architectures: ['CLIPTextModel'],
      model_type: 'clip_text_model',
      torch_dtype: opts.half ? 'float16' : 'float32',
      ...model.textEncoder.config,
    });
    await writeParams(path.join(tmp, 'text_encoder', 'model.safetensors'), model.textEncoder.params, opts.half);
    // Keys that were defaulted stay absent, so each scheduler class keeps applying its own default.
    const defaulted = new Set<string>(model.scheduler._use_default_values ?? []);
    const scheduler = Object.fromEntries(Object.entries(model.scheduler).filter(([k]) => !k.startsWith('_') && !defaulted.has(k)));
    await writeJson(path.join(tmp, 'scheduler', 'scheduler_config.json'), {
      _class_name: model.scheduler._class_name ?? 'PNDMScheduler',
      _diffusers_version: DIFFUSERS_VERSION,
      ...scheduler,
    });
    await saveTokenizer(model.tokenizer, path.join(tmp, 'tokenizer'));
    if (fs.existsSync(dir)) {
      const old = `${dir}.old-${process.pid}`;
      fs.renameSync(dir, old);
      fs.renameSync(tmp, dir);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.mkdirSync(path.dirname(path.resolve(dir)), { recursive: true });
      fs.renameSync(tmp, dir);
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

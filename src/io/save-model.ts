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
import type { ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { hostParams } from '../core/row-chunks.js';
import { PainterError } from '../errors.js';
import { tfjsToTorch } from './layout.js';
import { writeSafetensors, type TensorToWrite } from './safetensors.js';
import { saveTokenizer } from './save-tokenizer.js';
import { writeBytesAtomic } from './atomic.js';
import { CONFIG_FILES, type ModelConfigs } from './pipeline-configs.js';

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

/** What each component's config file holds, as diffusers writes it (also stored in single files painter writes). */
export function configFileJson(configs: ModelConfigs, half = false): Record<keyof ModelConfigs, Record<string, unknown>> {
  // Keys that were defaulted stay absent, so each scheduler class keeps applying its own default.
  const defaulted = new Set<string>(configs.scheduler._use_default_values ?? []);
  const scheduler = Object.fromEntries(Object.entries(configs.scheduler).filter(([k]) => !k.startsWith('_') && !defaulted.has(k)));
  return {
    unet: { _class_name: 'UNet2DConditionModel', _diffusers_version: DIFFUSERS_VERSION, ...stripPrivate(configs.unet) },
    vae: { _class_name: 'AutoencoderKL', _diffusers_version: DIFFUSERS_VERSION, ...stripPrivate(configs.vae) },
    textEncoder: { architectures: ['CLIPTextModel'], model_type: 'clip_text_model', torch_dtype: half ? 'float16' : 'float32', ...configs.textEncoder },
    scheduler: { _class_name: configs.scheduler._class_name ?? 'PNDMScheduler', _diffusers_version: DIFFUSERS_VERSION, ...scheduler },
  };
}

/** The parts of a pipeline folder besides its weights. */
export interface FolderContents {
  configs: ModelConfigs;
  tokenizer: ClipTokenizer;
  /** Weights stored as float16 (recorded in the text encoder's torch_dtype). */
  half: boolean;
  /** Writes one component's weights file (`unet`, `vae`, `text_encoder`) at `file`. */
  writeWeights(component: 'unet' | 'vae' | 'text_encoder', file: string): Promise<void>;
  /** Adds to the complete temporary folder before it is renamed into place (e.g. a record of how it was made). */
  finish?(dir: string): Promise<void>;
}

/**
 * Writes a diffusers pipeline folder atomically: everything goes into a temporary folder beside
 * `dir`, which replaces `dir` only once complete.
 */
export async function writeModelFolder(dir: string, contents: FolderContents, opts: { overwrite?: boolean } = {}): Promise<void> {
  if (fs.existsSync(dir) && !opts.overwrite) throw new PainterError(`${dir}: already exists; choose another output folder or remove it`);
  const tmp = `${dir}.partial-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const json = configFileJson(contents.configs, contents.half);
    await writeJson(path.join(tmp, 'model_index.json'), {
      _class_name: 'StableDiffusionPipeline',
      _diffusers_version: DIFFUSERS_VERSION,
      feature_extractor: [null, null],
      image_encoder: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ['diffusers', json.scheduler['_class_name']],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    });
    await writeJson(path.join(tmp, CONFIG_FILES.unet), json.unet);
    await contents.writeWeights('unet', path.join(tmp, 'unet', 'diffusion_pytorch_model.safetensors'));
    await writeJson(path.join(tmp, CONFIG_FILES.vae), json.vae);
    await contents.writeWeights('vae', path.join(tmp, 'vae', 'diffusion_pytorch_model.safetensors'));
    await writeJson(path.join(tmp, CONFIG_FILES.textEncoder), json.textEncoder);
    await contents.writeWeights('text_encoder', path.join(tmp, 'text_encoder', 'model.safetensors'));
    await writeJson(path.join(tmp, CONFIG_FILES.scheduler), json.scheduler);
    await saveTokenizer(contents.tokenizer, path.join(tmp, 'tokenizer'));
    await contents.finish?.(tmp);
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

export async function saveModel(model: StableDiffusion, dir: string, opts: SaveModelOptions = {}): Promise<void> {
  const params = { unet: model.unet.params, vae: model.vae.params, text_encoder: model.textEncoder.params };
  await writeModelFolder(
    dir,
    {
      configs: { unet: model.unet.config, vae: model.vae.config, textEncoder: model.textEncoder.config, scheduler: model.scheduler },
      tokenizer: model.tokenizer,
      half: opts.half ?? false,
      writeWeights: (component, file) => writeParams(file, params[component], opts.half),
    },
    opts,
  );
}

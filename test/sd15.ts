/**
 * Stable Diffusion 1.5's exact configs (UNet, VAE, CLIP ViT-L/14 text encoder with its 49408-token
 * vocabulary), as painter ships them in fixtures/sd-configs/sd1, for tests that need its size: header-only
 * checkpoints for the memory estimate, and random weights for the opt-in SD-1.5-shaped pipeline
 * test (test/sd15/).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clipTextParamShapes, parseClipTextConfig } from '../src/core/models/clip-text.js';
import { parseUNetConfig, unetParamShapes } from '../src/core/models/unet.js';
import { parseVaeConfig, vaeParamShapes } from '../src/core/models/vae.js';
import type { ParamShapes } from '../src/core/params.js';
import type { ClipTokenizerFiles } from '../src/core/tokenizer/clip-tokenizer.js';
import { bundledClipVocabulary, bundledConfigJson, bundledTokenizerSettings } from '../src/io/bundled-configs.js';
import { torchShape } from '../src/io/layout.js';

const SD1 = bundledConfigJson('sd1');
export const SD15_UNET = SD1.unet;
export const SD15_VAE = SD1.vae;
export const SD15_TEXT = SD1.textEncoder;

/**
 * A safetensors file whose header declares `shapes` as float16 and whose data area is a hole:
 * the file is truncated to its full length without writing a byte of tensor data (sparse).
 */
function writeHeaderOnly(file: string, shapes: ParamShapes, extra: Record<string, { dtype: string; shape: number[]; bytes: number }> = {}): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [key, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[key] = { dtype: 'F16', shape: torchShape(key, shape), data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  for (const [key, e] of Object.entries(extra)) {
    header[key] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.bytes] };
    offset += e.bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, json);
    fs.ftruncateSync(fd, 8 + json.length + offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** A diffusers folder of SD-1.5's size: real configs, headers that declare every tensor, no data. */
export function writeSd15Folder(dir: string): void {
  const write = (file: string, json: unknown) => {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), JSON.stringify(json, null, 2));
  };
  write('model_index.json', { _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'], text_encoder: ['transformers', 'CLIPTextModel'] });
  write('unet/config.json', SD15_UNET);
  write('vae/config.json', SD15_VAE);
  write('text_encoder/config.json', SD15_TEXT);
  writeHeaderOnly(path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors'), unetParamShapes(parseUNetConfig(SD15_UNET, 'unet')));
  writeHeaderOnly(path.join(dir, 'vae', 'diffusion_pytorch_model.safetensors'), vaeParamShapes(parseVaeConfig(SD15_VAE, 'vae')));
  writeHeaderOnly(path.join(dir, 'text_encoder', 'model.safetensors'), clipTextParamShapes(parseClipTextConfig(SD15_TEXT, 'text_encoder')), {
    'text_model.embeddings.position_ids': { dtype: 'I64', shape: [1, 77], bytes: 77 * 8 },
  });
}

/** SD-1.5's scheduler_config.json (PNDM, ε-prediction, scaled-linear betas). */
export const SD15_SCHEDULER = SD1.scheduler;

/**
 * CLIP ViT-L/14's tokenizer files (49408 tokens), as painter ships them for SD 1.x single files
 * (fixtures/sd-configs/: OpenAI's public BPE merges, the vocabulary built as their SimpleTokenizer builds it).
 */
export function sd15TokenizerFiles(): ClipTokenizerFiles {
  return { ...bundledClipVocabulary(), ...bundledTokenizerSettings('sd1') };
}

/**
 * Stable Diffusion 1.5's exact configs (UNet, VAE, CLIP ViT-L/14 text encoder with its 49408-token
 * vocabulary) for tests that need its size: header-only checkpoints for the memory estimate, and
 * random weights for the opt-in SD-1.5-shaped pipeline test (test/sd15/).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { clipTextParamShapes, parseClipTextConfig } from '../src/core/models/clip-text.js';
import { parseUNetConfig, unetParamShapes } from '../src/core/models/unet.js';
import { parseVaeConfig, vaeParamShapes } from '../src/core/models/vae.js';
import { weightKind, type ParamShapes } from '../src/core/params.js';

export const SD15_UNET = {
  _class_name: 'UNet2DConditionModel',
  sample_size: 64,
  in_channels: 4,
  out_channels: 4,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  attention_head_dim: 8,
  cross_attention_dim: 768,
  norm_num_groups: 32,
};
export const SD15_VAE = {
  _class_name: 'AutoencoderKL',
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 512,
  scaling_factor: 0.18215,
};
export const SD15_TEXT = {
  architectures: ['CLIPTextModel'],
  vocab_size: 49408,
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
};

/** PyTorch layout of a tfjs-layout shape (conv HWIO → OIHW, linear [in, out] → [out, in]). */
function torchShape(key: string, s: number[]): number[] {
  switch (weightKind(key, s.length)) {
    case 'conv':
      return [s[3]!, s[2]!, s[0]!, s[1]!];
    case 'linear':
      return [s[1]!, s[0]!];
    default:
      return s;
  }
}

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
export const SD15_SCHEDULER = {
  _class_name: 'PNDMScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  clip_sample: false,
};

/**
 * GPT-2's byte → printable-character table, which CLIP's BPE vocabulary is written in, in its
 * order (the printable bytes first, then the rest mapped past 255): the vocabulary's first 256 ids.
 */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (const [a, b] of [
    [33, 126],
    [161, 172],
    [174, 255],
  ] as const) {
    for (let i = a; i <= b; i++) printable.push(i);
  }
  const rest: number[] = [];
  for (let byte = 0; byte < 256; byte++) if (!printable.includes(byte)) rest.push(byte);
  return [...printable.map((b) => String.fromCodePoint(b)), ...rest.map((_, i) => String.fromCodePoint(256 + i))];
}

/**
 * CLIP ViT-L/14's tokenizer (49408 tokens) built from OpenAI's public BPE merges
 * (../shared/clip/bpe_simple_vocab_16e6.txt.gz) as their SimpleTokenizer builds it: the 256 byte
 * symbols, the same with "</w>", the first 48894 merges, then the two special tokens.
 */
export function sd15TokenizerFiles(clipDir: string): { vocab: Record<string, number>; merges: string; tokenizerConfig: unknown } {
  const lines = zlib.gunzipSync(fs.readFileSync(path.join(clipDir, 'bpe_simple_vocab_16e6.txt.gz'))).toString('utf8').split('\n');
  const merges = lines.slice(1, 49152 - 256 - 2 + 1);
  const bytes = bytesToUnicode();
  const words = [...bytes, ...bytes.map((b) => `${b}</w>`), ...merges.map((m) => m.replace(' ', '')), '<|startoftext|>', '<|endoftext|>'];
  const vocab: Record<string, number> = {};
  words.forEach((w, i) => (vocab[w] = i));
  const special = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false });
  return {
    vocab,
    merges: ['#version: 0.2', ...merges].join('\n') + '\n',
    tokenizerConfig: {
      bos_token: special('<|startoftext|>'),
      eos_token: special('<|endoftext|>'),
      unk_token: special('<|endoftext|>'),
      pad_token: '<|endoftext|>',
      do_lower_case: true,
      model_max_length: 77,
      tokenizer_class: 'CLIPTokenizer',
    },
  };
}

/**
 * Key conversion between original CompVis / AUTOMATIC1111 single-file checkpoints and diffusers
 * names. Block numbering is derived from the configs (never from the full-size SD tables):
 * - UNet `input_blocks` count one entry per res-block (its attention at `.1`) and one per
 *   downsampler (`.0.op`); `output_blocks` one per res-block of each up level, with the
 *   upsampler at `.1` after a plain res-block and at `.2` after one with attention.
 * - The VAE decoder's `up.N` runs in reverse order of diffusers' `up_blocks`.
 * - SD 1.x text encoders are Hugging Face CLIP under `cond_stage_model.transformer.`;
 *   SD 2.x stores OpenCLIP under `cond_stage_model.model.` (fused q/k/v `in_proj`).
 */
import type { UNetConfig } from '../core/models/unet.js';
import type { VaeConfig } from '../core/models/vae.js';

/** Text-encoder layout of a single file: Hugging Face CLIP (SD 1.x) or OpenCLIP (SD 2.x). */
export type Arch = 'sd1' | 'sd2';

export const UNET_PREFIX = 'model.diffusion_model.';
export const VAE_PREFIX = 'first_stage_model.';
export const CLIP_PREFIX = 'cond_stage_model.transformer.';
export const OPENCLIP_PREFIX = 'cond_stage_model.model.';

/** One block: LDM prefix ⇄ diffusers prefix, with renames of the names inside it. */
interface BlockMap {
  ldm: string;
  diffusers: string;
  inner: [string, string][];
}

const UNET_RESNET: [string, string][] = [
  ['in_layers.0.', 'norm1.'],
  ['in_layers.2.', 'conv1.'],
  ['emb_layers.1.', 'time_emb_proj.'],
  ['out_layers.0.', 'norm2.'],
  ['out_layers.3.', 'conv2.'],
  ['skip_connection.', 'conv_shortcut.'],
];
const VAE_RESNET: [string, string][] = [['nin_shortcut.', 'conv_shortcut.']];
const VAE_ATTENTION: [string, string][] = [
  ['norm.', 'group_norm.'],
  ['q.', 'to_q.'],
  ['k.', 'to_k.'],
  ['v.', 'to_v.'],
  ['proj_out.', 'to_out.0.'],
];

function perBlock(v: number | number[], i: number): number {
  return Array.isArray(v) ? v[i]! : v;
}

export function unetBlockMaps(c: UNetConfig): BlockMap[] {
  const maps: BlockMap[] = [
    { ldm: 'time_embed.0.', diffusers: 'time_embedding.linear_1.', inner: [] },
    { ldm: 'time_embed.2.', diffusers: 'time_embedding.linear_2.', inner: [] },
    { ldm: 'input_blocks.0.0.', diffusers: 'conv_in.', inner: [] },
    { ldm: 'out.0.', diffusers: 'conv_norm_out.', inner: [] },
    { ldm: 'out.2.', diffusers: 'conv_out.', inner: [] },
    { ldm: 'middle_block.0.', diffusers: 'mid_block.resnets.0.', inner: UNET_RESNET },
    { ldm: 'middle_block.1.', diffusers: 'mid_block.attentions.0.', inner: [] },
    { ldm: 'middle_block.2.', diffusers: 'mid_block.resnets.1.', inner: UNET_RESNET },
  ];
  const levels = c.block_out_channels.length;
  let input = 1;
  for (let i = 0; i < levels; i++) {
    const layers = perBlock(c.layers_per_block, i);
    const attn = c.down_block_types[i] === 'CrossAttnDownBlock2D';
    for (let j = 0; j < layers; j++, input++) {
      maps.push({ ldm: `input_blocks.${input}.0.`, diffusers: `down_blocks.${i}.resnets.${j}.`, inner: UNET_RESNET });
      if (attn) maps.push({ ldm: `input_blocks.${input}.1.`, diffusers: `down_blocks.${i}.attentions.${j}.`, inner: [] });
    }
    if (i < levels - 1) {
      maps.push({ ldm: `input_blocks.${input}.0.op.`, diffusers: `down_blocks.${i}.downsamplers.0.conv.`, inner: [] });
      input++;
    }
  }
  // Up levels mirror the down levels: level i uses the layers of down level (levels-1-i), plus one.
  let output = 0;
  for (let i = 0; i < levels; i++) {
    const layers = perBlock(c.layers_per_block, levels - 1 - i) + 1;
    const attn = c.up_block_types[i] === 'CrossAttnUpBlock2D';
    for (let j = 0; j < layers; j++, output++) {
      maps.push({ ldm: `output_blocks.${output}.0.`, diffusers: `up_blocks.${i}.resnets.${j}.`, inner: UNET_RESNET });
      if (attn) maps.push({ ldm: `output_blocks.${output}.1.`, diffusers: `up_blocks.${i}.attentions.${j}.`, inner: [] });
      if (j === layers - 1 && i < levels - 1) {
        maps.push({ ldm: `output_blocks.${output}.${attn ? 2 : 1}.conv.`, diffusers: `up_blocks.${i}.upsamplers.0.conv.`, inner: [] });
      }
    }
  }
  return maps;
}

export function vaeBlockMaps(c: VaeConfig): BlockMap[] {
  const maps: BlockMap[] = [
    { ldm: 'quant_conv.', diffusers: 'quant_conv.', inner: [] },
    { ldm: 'post_quant_conv.', diffusers: 'post_quant_conv.', inner: [] },
  ];
  const levels = c.block_out_channels.length;
  for (const part of ['encoder', 'decoder'] as const) {
    maps.push(
      { ldm: `${part}.conv_in.`, diffusers: `${part}.conv_in.`, inner: [] },
      { ldm: `${part}.conv_out.`, diffusers: `${part}.conv_out.`, inner: [] },
      { ldm: `${part}.norm_out.`, diffusers: `${part}.conv_norm_out.`, inner: [] },
      { ldm: `${part}.mid.block_1.`, diffusers: `${part}.mid_block.resnets.0.`, inner: VAE_RESNET },
      { ldm: `${part}.mid.block_2.`, diffusers: `${part}.mid_block.resnets.1.`, inner: VAE_RESNET },
      { ldm: `${part}.mid.attn_1.`, diffusers: `${part}.mid_block.attentions.0.`, inner: VAE_ATTENTION },
    );
  }
  for (let i = 0; i < levels; i++) {
    for (let j = 0; j < c.layers_per_block; j++) {
      maps.push({ ldm: `encoder.down.${i}.block.${j}.`, diffusers: `encoder.down_blocks.${i}.resnets.${j}.`, inner: VAE_RESNET });
    }
    if (i < levels - 1) maps.push({ ldm: `encoder.down.${i}.downsample.conv.`, diffusers: `encoder.down_blocks.${i}.downsamplers.0.conv.`, inner: [] });
    const up = levels - 1 - i; // LDM decoder numbering runs in reverse
    for (let j = 0; j < c.layers_per_block + 1; j++) {
      maps.push({ ldm: `decoder.up.${up}.block.${j}.`, diffusers: `decoder.up_blocks.${i}.resnets.${j}.`, inner: VAE_RESNET });
    }
    if (i < levels - 1) maps.push({ ldm: `decoder.up.${up}.upsample.conv.`, diffusers: `decoder.up_blocks.${i}.upsamplers.0.conv.`, inner: [] });
  }
  return maps;
}

/** A converter between the two namings for one component, built from its block maps. */
export interface KeyConverter {
  toDiffusers(ldmKey: string): string | undefined;
  toLdm(diffusersKey: string): string | undefined;
}

function renameInner(rest: string, inner: [string, string][], from: 0 | 1): string {
  for (const pair of inner) {
    if (rest.startsWith(pair[from])) return pair[1 - from] + rest.slice(pair[from].length);
  }
  return rest;
}

export function keyConverter(maps: BlockMap[]): KeyConverter {
  // Longest prefixes first, so `input_blocks.3.0.op.` wins over `input_blocks.3.0.`.
  const byLdm = [...maps].sort((a, b) => b.ldm.length - a.ldm.length);
  const byDiffusers = [...maps].sort((a, b) => b.diffusers.length - a.diffusers.length);
  return {
    toDiffusers(key) {
      const m = byLdm.find((b) => key.startsWith(b.ldm));
      return m ? m.diffusers + renameInner(key.slice(m.ldm.length), m.inner, 0) : undefined;
    },
    toLdm(key) {
      const m = byDiffusers.find((b) => key.startsWith(b.diffusers));
      return m ? m.ldm + renameInner(key.slice(m.diffusers.length), m.inner, 1) : undefined;
    },
  };
}

/** SD 1.x: Hugging Face CLIP keys, with or without the `text_model.` level of older transformers. */
export function clipKeyToDiffusers(rest: string): string {
  return rest.startsWith('text_model.') ? rest : `text_model.${rest}`;
}

/** OpenCLIP (SD 2.x) name inside a resblock → Hugging Face CLIP name. */
const OPENCLIP_LAYER: [string, string][] = [
  ['ln_1.', 'layer_norm1.'],
  ['ln_2.', 'layer_norm2.'],
  ['mlp.c_fc.', 'mlp.fc1.'],
  ['mlp.c_proj.', 'mlp.fc2.'],
  ['attn.out_proj.', 'self_attn.out_proj.'],
];

/**
 * OpenCLIP key (after `cond_stage_model.model.`) → HF CLIP key(s). The fused `attn.in_proj_*`
 * maps to three keys (q, k, v: split along the first axis). Returns undefined for keys with no
 * CLIPTextModel counterpart (text_projection, logit_scale, layers beyond `numLayers`).
 */
export function openClipToDiffusers(rest: string, numLayers: number): string[] | undefined {
  if (rest === 'token_embedding.weight') return ['text_model.embeddings.token_embedding.weight'];
  if (rest === 'positional_embedding') return ['text_model.embeddings.position_embedding.weight'];
  if (rest.startsWith('ln_final.')) return [`text_model.final_layer_norm.${rest.slice('ln_final.'.length)}`];
  const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(rest);
  if (!m) return undefined;
  const layer = Number(m[1]);
  if (layer >= numLayers) return undefined; // SD 2.x uses the penultimate layer: the last is dropped
  const name = m[2]!;
  const base = `text_model.encoder.layers.${layer}.`;
  const fused = /^attn\.in_proj_(weight|bias)$/.exec(name);
  if (fused) return ['q_proj', 'k_proj', 'v_proj'].map((p) => `${base}self_attn.${p}.${fused[1]}`);
  return [base + renameInner(name, OPENCLIP_LAYER, 0)];
}

/**
 * Floating-point operations of a UNet pass, counted from the model config: every weight of
 * the checkpoint key set (unetParamShapes) is a conv or a linear layer applied at a resolution
 * its key names, plus the two attention products per attention layer. A multiply-add counts
 * as 2 FLOPs. Norms, activations and additions (a few % of the total) are left out, so the
 * achieved GFLOP/s is slightly understated.
 */
import { unetParamShapes, type UNetConfig } from '../core/models/unet.js';

export interface UNetFlopsInput {
  batch: number;
  /** Latent height and width. */
  height: number;
  width: number;
  /** Tokens of the text conditioning (77 for CLIP). */
  contextLength: number;
}

/** Spatial size at UNet level `level` (each stride-2 3×3 conv with padding 1 gives ⌈h/2⌉). */
function sizeAt(h: number, level: number): number {
  let s = h;
  for (let i = 0; i < level; i++) s = Math.ceil(s / 2);
  return s;
}

/** The level whose resolution a key's layer produces, from its prefix. */
function levelOf(key: string, levels: number): number {
  const down = /^down_blocks\.(\d+)\.(.+)$/.exec(key);
  if (down) return Number(down[1]) + (down[2]!.startsWith('downsamplers.') ? 1 : 0);
  const up = /^up_blocks\.(\d+)\.(.+)$/.exec(key);
  if (up) return levels - 1 - Number(up[1]) - (up[2]!.startsWith('upsamplers.') ? 1 : 0);
  if (key.startsWith('mid_block.')) return levels - 1;
  return 0;
}

/** Forward FLOPs of one UNet pass on `input`. */
export function unetForwardFlops(config: UNetConfig, input: UNetFlopsInput): number {
  const levels = config.block_out_channels.length;
  const { batch, contextLength } = input;
  let flops = 0;
  for (const [key, shape] of unetParamShapes(config)) {
    if (!key.endsWith('.weight') || (shape.length !== 2 && shape.length !== 4)) continue;
    const level = levelOf(key, levels);
    const pixels = sizeAt(input.height, level) * sizeAt(input.width, level);
    if (shape.length === 4) {
      const [kh, kw, ci, co] = shape as [number, number, number, number];
      flops += 2 * batch * pixels * kh * kw * ci * co;
      continue;
    }
    const [inDim, outDim] = shape as [number, number];
    let rows: number;
    if (key.startsWith('time_embedding.') || key.includes('.time_emb_proj.')) rows = batch;
    else if (/\.attn2\.to_[kv]\.weight$/.test(key)) rows = batch * contextLength;
    else rows = batch * pixels;
    flops += 2 * rows * inDim * outDim;
    // Scores QKᵀ and the weighted sum PV: 2·L·S·inner each, S = L (self) or the context length.
    const attn = /\.(attn[12])\.to_q\.weight$/.exec(key);
    if (attn) {
      const keys = attn[1] === 'attn1' ? pixels : contextLength;
      flops += 2 * (2 * batch * pixels * keys * outDim);
    }
  }
  return flops;
}

/**
 * FLOPs of one training step: forward plus backward, the backward ≈ 2× the forward (a gradient
 * for each layer's input and one for its weights).
 */
export function unetTrainingFlops(config: UNetConfig, input: UNetFlopsInput): number {
  return 3 * unetForwardFlops(config, input);
}

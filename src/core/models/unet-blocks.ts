/**
 * Building blocks of diffusers' UNet2DConditionModel (SD 1.x/2.x), each a plain function over
 * NHWC tensors and weights addressed by their checkpoint keys under a prefix. Every block has a
 * `...Shapes` twin that lists the keys and tfjs-layout shapes the block reads, so loading and
 * the forward pass cannot disagree. Each block runs in its own tf.tidy, so inference frees a
 * block's intermediates as soon as it ends (under tf.variableGrads the tape keeps what
 * backprop needs).
 */
import * as tf from '@tensorflow/tfjs';
import { attention, conv2d, gelu, groupNorm, groupNormSilu, layerNorm, linear, upsampleNearest2x } from '../ops.js';
import type { AttentionControl, AttentionKind } from './attention-control.js';
import { param, type ParamShapes, type Params } from '../params.js';

/** diffusers' Transformer2DModel GroupNorm uses a fixed eps, not the UNet's norm_eps. */
const TRANSFORMER_GROUP_NORM_EPS = 1e-6;
/** BasicTransformerBlock LayerNorms (norm_eps default of Transformer2DModel). */
const TRANSFORMER_LAYER_NORM_EPS = 1e-5;
/** FeedForward inner width = 4·dim (GEGLU projects to twice that). */
const FF_MULT = 4;

/** ResnetBlock2D: `prefix` like "down_blocks.0.resnets.1". */
export interface ResnetSpec {
  prefix: string;
  inChannels: number;
  outChannels: number;
}

/** Transformer2DModel: `prefix` like "down_blocks.1.attentions.0". */
export interface TransformerSpec {
  prefix: string;
  /** Channels of the feature map (in = out). */
  channels: number;
  heads: number;
  /** diffusers passes channels // heads, so inner = heads·headDim may be < channels. */
  headDim: number;
  layers: number;
}

/** Settings every block of one UNet shares. */
export interface BlockSettings {
  groups: number;
  eps: number;
  tembChannels: number;
  crossAttentionDim: number;
  useLinearProjection: boolean;
  /** Attention slices recomputed in the backward pass (with gradient checkpointing). */
  checkpointAttention?: boolean;
  /** A hook on every attention's probabilities (Prompt-to-Prompt); inference only. */
  attentionControl?: AttentionControl;
}

function addLinear(out: ParamShapes, prefix: string, inDim: number, outDim: number, bias = true): void {
  out.set(`${prefix}.weight`, [inDim, outDim]);
  if (bias) out.set(`${prefix}.bias`, [outDim]);
}

function addConv(out: ParamShapes, prefix: string, k: number, inCh: number, outCh: number): void {
  out.set(`${prefix}.weight`, [k, k, inCh, outCh]);
  out.set(`${prefix}.bias`, [outCh]);
}

function addNorm(out: ParamShapes, prefix: string, ch: number): void {
  out.set(`${prefix}.weight`, [ch]);
  out.set(`${prefix}.bias`, [ch]);
}

// ---------------------------------------------------------------------------------------------
// Parameter shapes
// ---------------------------------------------------------------------------------------------

export function resnetShapes(s: ResnetSpec, b: BlockSettings, out: ParamShapes): void {
  addNorm(out, `${s.prefix}.norm1`, s.inChannels);
  addConv(out, `${s.prefix}.conv1`, 3, s.inChannels, s.outChannels);
  addLinear(out, `${s.prefix}.time_emb_proj`, b.tembChannels, s.outChannels);
  addNorm(out, `${s.prefix}.norm2`, s.outChannels);
  addConv(out, `${s.prefix}.conv2`, 3, s.outChannels, s.outChannels);
  if (s.inChannels !== s.outChannels) addConv(out, `${s.prefix}.conv_shortcut`, 1, s.inChannels, s.outChannels);
}

function attentionShapes(out: ParamShapes, prefix: string, inner: number, kvDim: number): void {
  addLinear(out, `${prefix}.to_q`, inner, inner, false);
  addLinear(out, `${prefix}.to_k`, kvDim, inner, false);
  addLinear(out, `${prefix}.to_v`, kvDim, inner, false);
  addLinear(out, `${prefix}.to_out.0`, inner, inner);
}

export function transformerShapes(s: TransformerSpec, b: BlockSettings, out: ParamShapes): void {
  const inner = s.heads * s.headDim;
  addNorm(out, `${s.prefix}.norm`, s.channels);
  if (b.useLinearProjection) addLinear(out, `${s.prefix}.proj_in`, s.channels, inner);
  else addConv(out, `${s.prefix}.proj_in`, 1, s.channels, inner);
  for (let j = 0; j < s.layers; j++) {
    const t = `${s.prefix}.transformer_blocks.${j}`;
    addNorm(out, `${t}.norm1`, inner);
    attentionShapes(out, `${t}.attn1`, inner, inner);
    addNorm(out, `${t}.norm2`, inner);
    attentionShapes(out, `${t}.attn2`, inner, b.crossAttentionDim);
    addNorm(out, `${t}.norm3`, inner);
    addLinear(out, `${t}.ff.net.0.proj`, inner, inner * FF_MULT * 2);
    addLinear(out, `${t}.ff.net.2`, inner * FF_MULT, inner);
  }
  if (b.useLinearProjection) addLinear(out, `${s.prefix}.proj_out`, inner, s.channels);
  else addConv(out, `${s.prefix}.proj_out`, 1, inner, s.channels);
}

/** Downsample2D / Upsample2D with use_conv: a 3×3 conv named "<prefix>.conv". */
export function resampleShapes(prefix: string, channels: number, out: ParamShapes): void {
  addConv(out, `${prefix}.conv`, 3, channels, channels);
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/**
 * ResnetBlock2D (time_embedding_norm "default"):
 *   h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, None, None, :]
 *   out = (shortcut(x) + conv2(silu(norm2(h)))) / output_scale_factor
 * `tembAct` is silu(temb), computed once per forward for all blocks.
 */
export function resnetBlock(
  p: Params,
  s: ResnetSpec,
  x: tf.Tensor4D,
  tembAct: tf.Tensor2D,
  b: BlockSettings,
  outputScaleFactor = 1,
): tf.Tensor4D {
  return tf.tidy(() => {
    const k = s.prefix;
    let h = groupNormSilu(x, b.groups, param(p, `${k}.norm1.weight`), param(p, `${k}.norm1.bias`), b.eps);
    h = conv2d(h, param(p, `${k}.conv1.weight`), param(p, `${k}.conv1.bias`), 1, 1);
    const t = linear(tembAct, param(p, `${k}.time_emb_proj.weight`), param(p, `${k}.time_emb_proj.bias`));
    h = tf.add(h, t.reshape([t.shape[0]!, 1, 1, s.outChannels]));
    h = groupNormSilu(h, b.groups, param(p, `${k}.norm2.weight`), param(p, `${k}.norm2.bias`), b.eps);
    h = conv2d(h, param(p, `${k}.conv2.weight`), param(p, `${k}.conv2.bias`), 1, 1);
    const shortcut =
      s.inChannels !== s.outChannels
        ? conv2d(x, param(p, `${k}.conv_shortcut.weight`), param(p, `${k}.conv_shortcut.bias`), 1, 0)
        : x;
    let y = tf.add(shortcut, h) as tf.Tensor4D;
    if (outputScaleFactor !== 1) y = tf.div(y, outputScaleFactor);
    return y;
  });
}

/** The feature map [height, width] a transformer block attends over (for the attention hook). */
type MapSize = readonly [number, number];

/** Attention (AttnProcessor): to_q/k/v without bias, softmax(QKᵀ/√d)V per head, to_out.0. */
function attentionBlock(p: Params, prefix: string, x: tf.Tensor3D, context: tf.Tensor3D, heads: number, b: BlockSettings, kind: AttentionKind, map: MapSize): tf.Tensor3D {
  const q = linear(x, param(p, `${prefix}.to_q.weight`));
  const k = linear(context, param(p, `${prefix}.to_k.weight`));
  const v = linear(context, param(p, `${prefix}.to_v.weight`));
  const control = b.attentionControl;
  const o = attention(q, k, v, heads, undefined, {
    checkpointSlices: b.checkpointAttention ?? false,
    ...(control && { editProbs: (probs: tf.Tensor, rowStart: number) => control.edit(probs, { kind, layer: prefix, height: map[0], width: map[1], rowStart }) }),
  });
  return linear(o, param(p, `${prefix}.to_out.0.weight`), param(p, `${prefix}.to_out.0.bias`)) as tf.Tensor3D;
}

/** FeedForward with GEGLU: proj → [hidden, gate]; hidden·gelu(gate) → net.2. */
function feedForward(p: Params, prefix: string, x: tf.Tensor3D): tf.Tensor3D {
  const proj = linear(x, param(p, `${prefix}.net.0.proj.weight`), param(p, `${prefix}.net.0.proj.bias`));
  const [hidden, gate] = tf.split(proj, 2, -1) as [tf.Tensor, tf.Tensor];
  const act = tf.mul(hidden, gelu(gate));
  return linear(act, param(p, `${prefix}.net.2.weight`), param(p, `${prefix}.net.2.bias`)) as tf.Tensor3D;
}

/** BasicTransformerBlock: pre-LayerNorm self-attention, cross-attention, GEGLU feed-forward. */
function basicTransformerBlock(p: Params, prefix: string, x: tf.Tensor3D, context: tf.Tensor3D, heads: number, b: BlockSettings, map: MapSize): tf.Tensor3D {
  const ln = (h: tf.Tensor3D, name: string): tf.Tensor3D =>
    layerNorm(h, param(p, `${prefix}.${name}.weight`), param(p, `${prefix}.${name}.bias`), TRANSFORMER_LAYER_NORM_EPS) as tf.Tensor3D;
  let h = x;
  const n1 = ln(h, 'norm1');
  h = tf.add(h, attentionBlock(p, `${prefix}.attn1`, n1, n1, heads, b, 'self', map));
  h = tf.add(h, attentionBlock(p, `${prefix}.attn2`, ln(h, 'norm2'), context, heads, b, 'cross', map));
  h = tf.add(h, feedForward(p, `${prefix}.ff`, ln(h, 'norm3')));
  return h;
}

/** A linear layer stored as a 1×1 conv [1, 1, in, out] or as a Linear [in, out]. */
function projection(p: Params, prefix: string, x: tf.Tensor): tf.Tensor {
  const w = param(p, `${prefix}.weight`);
  const w2 = w.rank === 4 ? w.reshape([w.shape[2]!, w.shape[3]!]) : w;
  return linear(x, w2, param(p, `${prefix}.bias`));
}

/**
 * Transformer2DModel on a feature map: GroupNorm, proj_in, transformer blocks over the H·W
 * tokens, proj_out, plus the input (residual). With NHWC a 1×1 conv proj_in/proj_out is the
 * same linear map over channels as use_linear_projection's Linear, only stored differently.
 */
export function transformer2d(p: Params, s: TransformerSpec, x: tf.Tensor4D, context: tf.Tensor3D, b: BlockSettings): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    const k = s.prefix;
    const normed = groupNorm(x, b.groups, param(p, `${k}.norm.weight`), param(p, `${k}.norm.bias`), TRANSFORMER_GROUP_NORM_EPS);
    let tokens = projection(p, `${k}.proj_in`, normed.reshape([n, h * w, c])) as tf.Tensor3D;
    for (let j = 0; j < s.layers; j++) {
      tokens = basicTransformerBlock(p, `${k}.transformer_blocks.${j}`, tokens, context, s.heads, b, [h, w]);
    }
    const out = projection(p, `${k}.proj_out`, tokens).reshape([n, h, w, c]);
    return tf.add(out, x) as tf.Tensor4D;
  });
}

/**
 * Downsample2D with use_conv: 3×3 conv, stride 2, padding as PyTorch pads (`padding` on every
 * side); with padding 0 diffusers first pads one zero row/column after (right/bottom).
 */
export function downsample(p: Params, prefix: string, x: tf.Tensor4D, padding: number): tf.Tensor4D {
  return tf.tidy(() => {
    const input = padding === 0 ? tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]) : x;
    return conv2d(input, param(p, `${prefix}.conv.weight`), param(p, `${prefix}.conv.bias`), 2, padding);
  });
}

/**
 * Upsample2D with use_conv: nearest ×2, then 3×3 conv. When the skip connection it meets is
 * one pixel smaller (odd sizes), diffusers interpolates to that size; nearest to 2h−1 picks
 * source row ⌊i·h/(2h−1)⌋ = ⌊i/2⌋ for every i < 2h−1, i.e. ×2 then crop.
 */
export function upsample(p: Params, prefix: string, x: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    const [th, tw] = size;
    if (th > 2 * h || tw > 2 * w || th < 2 * h - 1 || tw < 2 * w - 1) {
      throw new Error(`upsample: cannot bring ${h}×${w} to ${th}×${tw}`);
    }
    let y = upsampleNearest2x(x);
    if (th !== 2 * h || tw !== 2 * w) y = tf.slice(y, [0, 0, 0, 0], [n, th, tw, c]);
    return conv2d(y, param(p, `${prefix}.conv.weight`), param(p, `${prefix}.conv.bias`), 1, 1);
  });
}

/**
 * diffusers' UNet2DConditionModel as used by Stable Diffusion 1.x and 2.x: config parsed from
 * unet/config.json, the exact checkpoint key set, and the forward pass (NHWC).
 *
 *   t ─ sinusoidal ─ time_embedding ─┐ (emb, fed to every resnet)
 *   x ─ conv_in ─ down_blocks ─ mid_block ─ up_blocks (+ skips) ─ norm/silu/conv_out ─ ε̂
 *                       └──────────── skip connections ─────────┘
 *
 * Blocks live in unet-blocks.ts; this file turns the config into a plan (channels, heads and
 * prefixes of every block) that both the parameter shapes and the forward pass walk. For training,
 * the forward pass can checkpoint every resnet and transformer (checkpoint.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import { configObject, FieldReader } from '../config-fields.js';
import { conv2d, groupNormSilu, linear, silu } from '../ops.js';
import { param, type ParamShapes, type Params } from '../params.js';
import type { AttentionControl } from './attention-control.js';
import { checkpointed, type CheckpointOptions } from './checkpoint.js';
import { timestepEmbedding } from './timestep-embedding.js';
import {
  downsample,
  resampleShapes,
  resnetBlock,
  resnetShapes,
  transformer2d,
  transformerShapes,
  upsample,
  type BlockSettings,
  type ResnetSpec,
  type TransformerSpec,
} from './unet-blocks.js';

export type UNetDownBlockType = 'DownBlock2D' | 'CrossAttnDownBlock2D';
export type UNetUpBlockType = 'UpBlock2D' | 'CrossAttnUpBlock2D';
export type UNetMidBlockType = 'UNetMidBlock2DCrossAttn';

/**
 * The config.json fields SD 1.x/2.x UNets use, named as in the file (so it can be written back
 * unchanged). Fields diffusers allows but painter does not implement (class/addition
 * embeddings, dual cross-attention, …) are rejected by parseUNetConfig unless at their defaults.
 */
export interface UNetConfig {
  sample_size: number | null;
  in_channels: number;
  out_channels: number;
  center_input_sample: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  down_block_types: UNetDownBlockType[];
  mid_block_type: UNetMidBlockType | null;
  up_block_types: UNetUpBlockType[];
  only_cross_attention: boolean | boolean[];
  block_out_channels: number[];
  layers_per_block: number | number[];
  downsample_padding: number;
  mid_block_scale_factor: number;
  act_fn: 'silu' | 'swish';
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number;
  transformer_layers_per_block: number | number[];
  /** Per block, the number of heads (diffusers' historical misnomer; see num_attention_heads). */
  attention_head_dim: number | number[];
  /** Always null: diffusers 0.30 refuses it and takes the head count from attention_head_dim. */
  num_attention_heads: null;
  dual_cross_attention: false;
  use_linear_projection: boolean;
  /** Attention runs in float32 anyway, so this changes nothing numerically. */
  upcast_attention: boolean;
  resnet_time_scale_shift: 'default';
  time_embedding_type: 'positional';
  time_embedding_dim: number | null;
  class_embed_type: null;
  conv_in_kernel: number;
  conv_out_kernel: number;
}

// ---------------------------------------------------------------------------------------------
// Config parsing
// ---------------------------------------------------------------------------------------------

const isNull = (v: unknown): boolean => v === null;
const isFalse = (v: unknown): boolean => v === false || v === null;

/**
 * Validates a UNet config.json (diffusers defaults for absent optional fields). Any problem →
 * PainterError naming `source` and every offending field.
 */
export function parseUNetConfig(json: unknown, source: string): UNetConfig {
  const j = configObject(json, source, 'a diffusers UNet2DConditionModel config.json');
  // A true/false field written as null takes its default.
  const r = new FieldReader(j, { nullIsDefault: ['boolean'] });
  if (r.has('_class_name') && j['_class_name'] !== 'UNet2DConditionModel') {
    r.problem(`"_class_name" is ${JSON.stringify(j['_class_name'])}, expected "UNet2DConditionModel"`);
  }
  const onlyCross = j['only_cross_attention'];
  r.unsupported(
    'only_cross_attention',
    (v) => v === false || (Array.isArray(v) && v.every((x) => x === false)),
    'painter implements self- plus cross-attention blocks only; set it to false',
  );
  if (j['num_attention_heads'] != null) {
    r.problem('"num_attention_heads" must be null: diffusers 0.30 refuses it and reads the head count from "attention_head_dim"; move the value there');
  }
  const config: UNetConfig = {
    sample_size: r.read('sample_size', { type: 'integer', min: 1, nullable: true }, null),
    in_channels: r.int('in_channels', 4),
    out_channels: r.int('out_channels', 4),
    center_input_sample: r.bool('center_input_sample', false),
    flip_sin_to_cos: r.bool('flip_sin_to_cos', true),
    freq_shift: r.number('freq_shift', 0),
    down_block_types: r.list('down_block_types', { type: 'string', choices: ['DownBlock2D', 'CrossAttnDownBlock2D'] }),
    mid_block_type: r.read('mid_block_type', { type: 'string', choices: ['UNetMidBlock2DCrossAttn'], nullable: true }, 'UNetMidBlock2DCrossAttn'),
    up_block_types: r.list('up_block_types', { type: 'string', choices: ['UpBlock2D', 'CrossAttnUpBlock2D'] }),
    only_cross_attention: Array.isArray(onlyCross) ? (onlyCross as boolean[]) : false,
    block_out_channels: r.list('block_out_channels', { type: 'integer', min: 1 }),
    layers_per_block: r.intOrList('layers_per_block', 2),
    downsample_padding: r.int('downsample_padding', 1, 0),
    mid_block_scale_factor: r.number('mid_block_scale_factor', 1),
    act_fn: r.choice('act_fn', ['silu', 'swish'], 'silu'),
    norm_num_groups: r.int('norm_num_groups', 32),
    norm_eps: r.number('norm_eps', 1e-5),
    cross_attention_dim: r.int('cross_attention_dim'),
    transformer_layers_per_block: r.intOrList('transformer_layers_per_block', 1),
    attention_head_dim: r.intOrList('attention_head_dim', 8),
    num_attention_heads: null,
    dual_cross_attention: false,
    use_linear_projection: r.bool('use_linear_projection', false),
    upcast_attention: r.bool('upcast_attention', false),
    resnet_time_scale_shift: r.choice('resnet_time_scale_shift', ['default'], 'default'),
    time_embedding_type: r.choice('time_embedding_type', ['positional'], 'positional'),
    time_embedding_dim: r.read('time_embedding_dim', { type: 'integer', min: 1, nullable: true }, null),
    class_embed_type: null,
    conv_in_kernel: r.int('conv_in_kernel', 3),
    conv_out_kernel: r.int('conv_out_kernel', 3),
  };
  r.unsupported('dual_cross_attention', isFalse, 'SD 1.x/2.x UNets use a single cross-attention');
  r.unsupported('class_embed_type', isNull, 'class-conditioned UNets are not supported; SD 1.x/2.x use null');
  r.unsupported('num_class_embeds', isNull, 'class-conditioned UNets are not supported');
  r.unsupported('addition_embed_type', isNull, 'SDXL-style added embeddings are not supported');
  r.unsupported('encoder_hid_dim', isNull, 'an encoder projection is not supported');
  r.unsupported('encoder_hid_dim_type', isNull, 'an encoder projection is not supported');
  r.unsupported('time_cond_proj_dim', isNull, 'LCM-style timestep conditioning is not supported');
  r.unsupported('time_embedding_act_fn', isNull, 'only the plain time embedding is supported');
  r.unsupported('timestep_post_act', isNull, 'only the plain time embedding is supported');
  r.unsupported('class_embeddings_concat', isFalse, 'class embeddings are not supported');
  r.unsupported('resnet_skip_time_act', isFalse, 'only ResnetBlock2D with the time activation is supported');
  r.unsupported('resnet_out_scale_factor', (v) => v === 1, 'only 1.0 is supported');
  r.unsupported('cross_attention_norm', isNull, 'only plain cross-attention is supported');
  r.unsupported('attention_type', (v) => v === 'default', 'only "default" attention is supported');
  r.unsupported('mid_block_only_cross_attention', isFalse, 'painter implements self- plus cross-attention blocks only');
  r.unsupported('reverse_transformer_layers_per_block', isNull, 'asymmetric transformer depths are not supported');
  r.unsupported('dropout', (v) => v === 0, 'dropout is not implemented; use 0.0');
  if (r.problems.length === 0) checkStructure(config, r);
  r.throwIfProblems(`${source}: invalid UNet config`);
  return config;
}

/** Cross-field checks, run only on a config whose fields individually parsed. */
function checkStructure(c: UNetConfig, r: FieldReader): void {
  const n = c.down_block_types.length;
  const perBlock: [string, unknown][] = [
    ['up_block_types', c.up_block_types],
    ['block_out_channels', c.block_out_channels],
    ['layers_per_block', c.layers_per_block],
    ['transformer_layers_per_block', c.transformer_layers_per_block],
    ['attention_head_dim', c.attention_head_dim],
    ['only_cross_attention', c.only_cross_attention],
  ];
  for (const [key, v] of perBlock) {
    if (Array.isArray(v) && v.length !== n) {
      r.problem(`"${key}" has ${v.length} entries but "down_block_types" has ${n}; give one per block`);
    }
  }
  if (c.conv_in_kernel % 2 === 0) r.problem('"conv_in_kernel" must be odd');
  if (c.conv_out_kernel % 2 === 0) r.problem('"conv_out_kernel" must be odd');
  if (r.problems.length > 0) return;
  const plan = unetPlan(c);
  const g = c.norm_num_groups;
  const channelCounts = new Set<number>([c.block_out_channels[0]!]);
  for (const blk of [...plan.down, ...(plan.mid ? [plan.mid] : []), ...plan.up]) {
    for (const rs of blk.resnets) channelCounts.add(rs.inChannels).add(rs.outChannels);
    for (const t of blk.attentions) {
      if (t.headDim < 1) r.problem(`"attention_head_dim" asks for ${t.heads} heads on ${t.channels} channels (${t.prefix}); use at most ${t.channels}`);
    }
  }
  for (const ch of channelCounts) {
    if (ch % g !== 0) r.problem(`"norm_num_groups" ${g} does not divide ${ch} channels of a block; use a divisor of every block width`);
  }
}

// ---------------------------------------------------------------------------------------------
// Plan: every block's prefix, channels and heads
// ---------------------------------------------------------------------------------------------

interface BlockPlan {
  prefix: string;
  resnets: ResnetSpec[];
  /** Empty for DownBlock2D/UpBlock2D; otherwise one per resnet. */
  attentions: TransformerSpec[];
}

interface DownBlockPlan extends BlockPlan {
  downsample: boolean;
}

interface UpBlockPlan extends BlockPlan {
  upsample: boolean;
}

interface UNetPlan {
  settings: BlockSettings;
  timeInputDim: number;
  timeEmbedDim: number;
  down: DownBlockPlan[];
  mid: BlockPlan | null;
  up: UpBlockPlan[];
}

function perBlock(v: number | number[], n: number): number[] {
  return Array.isArray(v) ? v : Array<number>(n).fill(v);
}

function hasAttention(type: UNetDownBlockType | UNetUpBlockType): boolean {
  switch (type) {
    case 'DownBlock2D':
    case 'UpBlock2D':
      return false;
    case 'CrossAttnDownBlock2D':
    case 'CrossAttnUpBlock2D':
      return true;
  }
}

/** One Transformer2DModel per resnet; diffusers gives it channels // heads per head. */
function transformersFor(prefix: string, count: number, channels: number, heads: number, layers: number): TransformerSpec[] {
  return Array.from({ length: count }, (_, j) => ({
    prefix: `${prefix}.attentions.${j}`,
    channels,
    heads,
    headDim: Math.floor(channels / heads),
    layers,
  }));
}

function unetPlan(c: UNetConfig): UNetPlan {
  const n = c.block_out_channels.length;
  const ch = c.block_out_channels;
  // The head count lives in attention_head_dim (num_attention_heads is always null here).
  const heads = perBlock(c.attention_head_dim, n);
  const layers = perBlock(c.layers_per_block, n);
  const tLayers = perBlock(c.transformer_layers_per_block, n);
  const timeInputDim = ch[0]!;
  const timeEmbedDim = c.time_embedding_dim ?? ch[0]! * 4;
  const settings: BlockSettings = {
    groups: c.norm_num_groups,
    eps: c.norm_eps,
    tembChannels: timeEmbedDim,
    crossAttentionDim: c.cross_attention_dim,
    useLinearProjection: c.use_linear_projection,
  };

  const down = c.down_block_types.map((type, i): DownBlockPlan => {
    const prefix = `down_blocks.${i}`;
    const inCh = i === 0 ? ch[0]! : ch[i - 1]!;
    const out = ch[i]!;
    const resnets = Array.from({ length: layers[i]! }, (_, j) => ({
      prefix: `${prefix}.resnets.${j}`,
      inChannels: j === 0 ? inCh : out,
      outChannels: out,
    }));
    const attentions = hasAttention(type) ? transformersFor(prefix, resnets.length, out, heads[i]!, tLayers[i]!) : [];
    return { prefix, resnets, attentions, downsample: i < n - 1 };
  });

  let mid: BlockPlan | null = null;
  switch (c.mid_block_type) {
    case 'UNetMidBlock2DCrossAttn': {
      const last = ch[n - 1]!;
      mid = {
        prefix: 'mid_block',
        resnets: [0, 1].map((j) => ({ prefix: `mid_block.resnets.${j}`, inChannels: last, outChannels: last })),
        attentions: transformersFor('mid_block', 1, last, heads[n - 1]!, tLayers[n - 1]!),
      };
      break;
    }
    case null:
      break;
  }

  const rev = [...ch].reverse();
  const up = c.up_block_types.map((type, i): UpBlockPlan => {
    const prefix = `up_blocks.${i}`;
    const prevOut = rev[Math.max(i - 1, 0)]!;
    const out = rev[i]!;
    const skipIn = rev[Math.min(i + 1, n - 1)]!;
    const count = layers[n - 1 - i]! + 1;
    // Resnet j concatenates its input with one skip: the last one comes from the previous level.
    const resnets = Array.from({ length: count }, (_, j) => ({
      prefix: `${prefix}.resnets.${j}`,
      inChannels: (j === 0 ? prevOut : out) + (j === count - 1 ? skipIn : out),
      outChannels: out,
    }));
    const attentions = hasAttention(type) ? transformersFor(prefix, count, out, heads[n - 1 - i]!, tLayers[n - 1 - i]!) : [];
    return { prefix, resnets, attentions, upsample: i < n - 1 };
  });

  return { settings, timeInputDim, timeEmbedDim, down, mid, up };
}

// ---------------------------------------------------------------------------------------------
// Parameter shapes
// ---------------------------------------------------------------------------------------------

/** Every key of the diffusers checkpoint for `config`, with its tfjs-layout shape. */
export function unetParamShapes(config: UNetConfig): ParamShapes {
  const plan = unetPlan(config);
  const s = plan.settings;
  const out: ParamShapes = new Map();
  const c0 = config.block_out_channels[0]!;
  const kIn = config.conv_in_kernel;
  const kOut = config.conv_out_kernel;
  out.set('conv_in.weight', [kIn, kIn, config.in_channels, c0]).set('conv_in.bias', [c0]);
  out.set('time_embedding.linear_1.weight', [plan.timeInputDim, plan.timeEmbedDim]);
  out.set('time_embedding.linear_1.bias', [plan.timeEmbedDim]);
  out.set('time_embedding.linear_2.weight', [plan.timeEmbedDim, plan.timeEmbedDim]);
  out.set('time_embedding.linear_2.bias', [plan.timeEmbedDim]);
  const blockShapes = (b: BlockPlan): void => {
    for (const t of b.attentions) transformerShapes(t, s, out);
    for (const r of b.resnets) resnetShapes(r, s, out);
  };
  for (const b of plan.down) {
    blockShapes(b);
    if (b.downsample) resampleShapes(`${b.prefix}.downsamplers.0`, b.resnets[b.resnets.length - 1]!.outChannels, out);
  }
  for (const b of plan.up) {
    blockShapes(b);
    if (b.upsample) resampleShapes(`${b.prefix}.upsamplers.0`, b.resnets[0]!.outChannels, out);
  }
  if (plan.mid) blockShapes(plan.mid);
  out.set('conv_norm_out.weight', [c0]).set('conv_norm_out.bias', [c0]);
  out.set('conv_out.weight', [kOut, kOut, c0, config.out_channels]).set('conv_out.bias', [config.out_channels]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/** Timesteps as float32 [B]: a number or a scalar/[1] tensor is broadcast to the batch. */
function batchTimesteps(timesteps: tf.Tensor | number, batch: number): tf.Tensor1D {
  if (typeof timesteps === 'number') return tf.fill([batch], timesteps, 'float32') as tf.Tensor1D;
  const flat = timesteps.toFloat().reshape([-1]) as tf.Tensor1D;
  if (flat.shape[0] === batch) return flat;
  if (flat.shape[0] === 1) return tf.broadcastTo(flat, [batch]) as tf.Tensor1D;
  throw new Error(`unetForward: ${flat.shape[0]} timesteps for a batch of ${batch}`);
}

export interface UNetForwardOptions {
  /**
   * Gradient checkpointing of every resnet and transformer (down, mid and up), as diffusers'
   * enable_gradient_checkpointing: their activations are recomputed in the backward pass instead
   * of kept. Off (undefined) by default; the output is the same either way.
   */
  checkpoint?: CheckpointOptions;
  /** A hook on every attention's probabilities (Prompt-to-Prompt); inference only. */
  attentionControl?: AttentionControl;
}

/**
 * Predicts the UNet output (ε or v, per the scheduler's prediction_type) for a latent batch.
 * sample: [B, h, w, in_channels] NHWC; timesteps: number, scalar or [B] (int or fractional);
 * encoderHiddenStates: [B, L, cross_attention_dim]. Returns [B, h, w, out_channels].
 */
export function unetForward(
  params: Params,
  config: UNetConfig,
  sample: tf.Tensor4D,
  timesteps: tf.Tensor | number,
  encoderHiddenStates: tf.Tensor3D,
  options: UNetForwardOptions = {},
): tf.Tensor4D {
  const plan = unetPlan(config);
  const s = options.attentionControl ? { ...plan.settings, attentionControl: options.attentionControl } : plan.settings;
  const [batch, , , channels] = sample.shape;
  if (channels !== config.in_channels) {
    throw new Error(`unetForward: sample has ${channels} channels, the UNet takes ${config.in_channels} (NHWC expected)`);
  }
  const [ctxBatch, , ctxDim] = encoderHiddenStates.shape;
  if (ctxDim !== config.cross_attention_dim) {
    throw new PainterError(
      `the text embeddings have width ${ctxDim} but the UNet's cross_attention_dim is ${config.cross_attention_dim}; the text encoder and UNet come from different models`,
    );
  }
  if (ctxBatch !== batch) throw new Error(`unetForward: ${ctxBatch} text embeddings for a batch of ${batch}`);
  const ck = options.checkpoint;

  return tf.tidy(() => {
    // 1. time: sinusoidal features → MLP; every resnet consumes silu(emb).
    const tFeatures = timestepEmbedding(batchTimesteps(timesteps, batch), plan.timeInputDim, config.flip_sin_to_cos, config.freq_shift);
    let emb = linear(tFeatures, param(params, 'time_embedding.linear_1.weight'), param(params, 'time_embedding.linear_1.bias'));
    emb = linear(silu(emb), param(params, 'time_embedding.linear_2.weight'), param(params, 'time_embedding.linear_2.bias'));
    const tembAct = silu(emb) as tf.Tensor2D;
    // The two block kinds diffusers checkpoints; the weights they read are those under their prefix.
    const resnet = (r: ResnetSpec, h: tf.Tensor4D, scale = 1): tf.Tensor4D =>
      ck
        ? checkpointed((p, [hIn, t]) => resnetBlock(p, r, hIn as tf.Tensor4D, t as tf.Tensor2D, s, scale), params, `${r.prefix}.`, [h, tembAct], ck)
        : resnetBlock(params, r, h, tembAct, s, scale);
    const transformer = (t: TransformerSpec, h: tf.Tensor4D): tf.Tensor4D =>
      ck
        ? checkpointed((p, [hIn, c]) => transformer2d(p, t, hIn as tf.Tensor4D, c as tf.Tensor3D, { ...s, checkpointAttention: true }), params, `${t.prefix}.`, [h, encoderHiddenStates], ck)
        : transformer2d(params, t, h, encoderHiddenStates, s);

    // 2. input
    let x: tf.Tensor4D = config.center_input_sample ? tf.sub(tf.mul(sample, 2), 1) : sample;
    x = conv2d(x, param(params, 'conv_in.weight'), param(params, 'conv_in.bias'), 1, (config.conv_in_kernel - 1) / 2);

    // 3. down: every resnet (+attention) output and every downsample output is a skip.
    const skips: tf.Tensor4D[] = [x];
    for (const b of plan.down) {
      b.resnets.forEach((r, j) => {
        x = resnet(r, x);
        const attn = b.attentions[j];
        if (attn) x = transformer(attn, x);
        skips.push(x);
      });
      if (b.downsample) {
        x = downsample(params, `${b.prefix}.downsamplers.0`, x, config.downsample_padding);
        skips.push(x);
      }
    }

    // 4. mid: resnet, then (attention, resnet) pairs.
    if (plan.mid) {
      const m = plan.mid;
      x = resnet(m.resnets[0]!, x, config.mid_block_scale_factor);
      m.attentions.forEach((attn, j) => {
        x = transformer(attn, x);
        x = resnet(m.resnets[j + 1]!, x, config.mid_block_scale_factor);
      });
    }

    // 5. up: each resnet takes the latest skip concatenated on channels (skips pop LIFO).
    for (const b of plan.up) {
      b.resnets.forEach((r, j) => {
        const skip = skips.pop();
        if (!skip) throw new Error('unetForward: ran out of skip connections (inconsistent config)');
        x = resnet(r, tf.concat([x, skip], 3));
        const attn = b.attentions[j];
        if (attn) x = transformer(attn, x);
      });
      if (b.upsample) {
        const next = skips[skips.length - 1];
        const size: [number, number] = next ? [next.shape[1], next.shape[2]] : [x.shape[1] * 2, x.shape[2] * 2];
        x = upsample(params, `${b.prefix}.upsamplers.0`, x, size);
      }
    }

    // 6. output
    x = groupNormSilu(x, s.groups, param(params, 'conv_norm_out.weight'), param(params, 'conv_norm_out.bias'), s.eps);
    return conv2d(x, param(params, 'conv_out.weight'), param(params, 'conv_out.bias'), 1, (config.conv_out_kernel - 1) / 2);
  });
}

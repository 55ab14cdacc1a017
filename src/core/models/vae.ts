/**
 * diffusers' AutoencoderKL (the Stable Diffusion VAE) on NHWC tensors. Weights are addressed
 * by their checkpoint keys (`encoder.down_blocks.0.resnets.0.conv1.weight`) in tfjs layout.
 *
 *   encode: x → Encoder → quant_conv → moments = [mean | logvar]   (DiagonalGaussianDistribution)
 *   decode: z → post_quant_conv → Decoder → image
 * Latents are raw (the pipeline divides by scaling_factor before decoding, multiplies after encoding).
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import { configObject, FieldReader } from '../config-fields.js';
import { attention, conv2d, gelu, groupNorm, groupNormSilu, linear, silu } from '../ops.js';
import { param, type ParamShapes, type Params } from '../params.js';
import { downsample, upsample } from './unet-blocks.js';

export type VaeDownBlockType = 'DownEncoderBlock2D';
export type VaeUpBlockType = 'UpDecoderBlock2D';
export type VaeActFn = 'silu' | 'swish' | 'gelu' | 'relu';

/** diffusers' AutoencoderKL config (the fields SD 1.x / 2.x VAEs use). */
export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  down_block_types: VaeDownBlockType[];
  up_block_types: VaeUpBlockType[];
  block_out_channels: number[];
  layers_per_block: number;
  act_fn: VaeActFn;
  latent_channels: number;
  norm_num_groups: number;
  sample_size: number;
  scaling_factor: number;
  shift_factor: number | null;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  mid_block_add_attention: boolean;
  force_upcast: boolean;
}

const ACT_FNS: readonly VaeActFn[] = ['silu', 'swish', 'gelu', 'relu'];

// Every GroupNorm inside diffusers' VAE Encoder/Decoder uses eps 1e-6.
const NORM_EPS = 1e-6;

/** Validates vae/config.json; missing fields take AutoencoderKL's defaults. All problems are reported at once. */
export function parseVaeConfig(json: unknown, source: string): VaeConfig {
  const r = new FieldReader(configObject(json, source, "the VAE's (AutoencoderKL) config.json"));
  const cfg: VaeConfig = {
    in_channels: r.int('in_channels', 3),
    out_channels: r.int('out_channels', 3),
    down_block_types: r.list('down_block_types', { type: 'string', choices: ['DownEncoderBlock2D'] }, ['DownEncoderBlock2D']),
    up_block_types: r.list('up_block_types', { type: 'string', choices: ['UpDecoderBlock2D'] }, ['UpDecoderBlock2D']),
    block_out_channels: r.list('block_out_channels', { type: 'integer', min: 1 }, [64]),
    layers_per_block: r.int('layers_per_block', 1),
    act_fn: 'silu',
    latent_channels: r.int('latent_channels', 4),
    norm_num_groups: r.int('norm_num_groups', 32),
    sample_size: r.int('sample_size', 32),
    scaling_factor: r.number('scaling_factor', 0.18215),
    shift_factor: null,
    use_quant_conv: r.bool('use_quant_conv', true),
    use_post_quant_conv: r.bool('use_post_quant_conv', true),
    mid_block_add_attention: r.bool('mid_block_add_attention', true),
    force_upcast: r.bool('force_upcast', true),
  };
  cfg.act_fn = r.choice('act_fn', ACT_FNS, 'silu');
  cfg.shift_factor = r.read('shift_factor', { type: 'number', nullable: true }, null);
  const n = cfg.block_out_channels.length;
  if (cfg.down_block_types.length !== n || cfg.up_block_types.length !== n) {
    r.problem(`"down_block_types" and "up_block_types" must have one entry per "block_out_channels" entry (${n})`);
  }
  for (const c of cfg.block_out_channels) {
    if (c % cfg.norm_num_groups !== 0) r.problem(`"block_out_channels" entry ${c} is not divisible by "norm_num_groups" (${cfg.norm_num_groups})`);
  }
  r.throwIfProblems(`${source}: invalid VAE config`);
  return cfg;
}

/** Spatial downsampling factor between image and latents: 2^(number of blocks − 1). */
export function vaeLatentFactor(config: VaeConfig): number {
  return 2 ** (config.block_out_channels.length - 1);
}

// ---- parameter shapes (tfjs layout: conv HWIO, linear [in, out]) ----

function convShape(s: ParamShapes, key: string, k: number, cin: number, cout: number): void {
  s.set(`${key}.weight`, [k, k, cin, cout]);
  s.set(`${key}.bias`, [cout]);
}

function normShape(s: ParamShapes, key: string, c: number): void {
  s.set(`${key}.weight`, [c]);
  s.set(`${key}.bias`, [c]);
}

function resnetShapes(s: ParamShapes, key: string, cin: number, cout: number): void {
  normShape(s, `${key}.norm1`, cin);
  convShape(s, `${key}.conv1`, 3, cin, cout);
  normShape(s, `${key}.norm2`, cout);
  convShape(s, `${key}.conv2`, 3, cout, cout);
  if (cin !== cout) convShape(s, `${key}.conv_shortcut`, 1, cin, cout);
}

function midBlockShapes(s: ParamShapes, key: string, c: number, withAttention: boolean): void {
  resnetShapes(s, `${key}.resnets.0`, c, c);
  if (withAttention) {
    const a = `${key}.attentions.0`;
    normShape(s, `${a}.group_norm`, c);
    for (const proj of ['to_q', 'to_k', 'to_v', 'to_out.0']) {
      s.set(`${a}.${proj}.weight`, [c, c]);
      s.set(`${a}.${proj}.bias`, [c]);
    }
  }
  resnetShapes(s, `${key}.resnets.1`, c, c);
}

/** Exact key set of a diffusers AutoencoderKL checkpoint. */
export function vaeParamShapes(config: VaeConfig): ParamShapes {
  const s: ParamShapes = new Map();
  const ch = config.block_out_channels;
  const last = ch[ch.length - 1]!;
  const lat = config.latent_channels;

  convShape(s, 'encoder.conv_in', 3, config.in_channels, ch[0]!);
  let cin = ch[0]!;
  ch.forEach((cout, i) => {
    for (let j = 0; j < config.layers_per_block; j++) resnetShapes(s, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (i < ch.length - 1) convShape(s, `encoder.down_blocks.${i}.downsamplers.0.conv`, 3, cout, cout);
    cin = cout;
  });
  midBlockShapes(s, 'encoder.mid_block', last, config.mid_block_add_attention);
  normShape(s, 'encoder.conv_norm_out', last);
  convShape(s, 'encoder.conv_out', 3, last, 2 * lat);
  if (config.use_quant_conv) convShape(s, 'quant_conv', 1, 2 * lat, 2 * lat);
  if (config.use_post_quant_conv) convShape(s, 'post_quant_conv', 1, lat, lat);

  convShape(s, 'decoder.conv_in', 3, lat, last);
  midBlockShapes(s, 'decoder.mid_block', last, config.mid_block_add_attention);
  const rev = [...ch].reverse();
  cin = rev[0]!;
  rev.forEach((cout, i) => {
    for (let j = 0; j < config.layers_per_block + 1; j++) resnetShapes(s, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (i < rev.length - 1) convShape(s, `decoder.up_blocks.${i}.upsamplers.0.conv`, 3, cout, cout);
    cin = cout;
  });
  normShape(s, 'decoder.conv_norm_out', ch[0]!);
  convShape(s, 'decoder.conv_out', 3, ch[0]!, config.out_channels);
  return s;
}

// ---- blocks ----

function act(x: tf.Tensor, fn: VaeActFn): tf.Tensor {
  switch (fn) {
    case 'silu':
    case 'swish':
      return silu(x);
    case 'gelu':
      return gelu(x);
    case 'relu':
      return tf.relu(x);
  }
}

function conv(p: Params, key: string, x: tf.Tensor4D, padding: number, stride = 1): tf.Tensor4D {
  return conv2d(x, param(p, `${key}.weight`), param(p, `${key}.bias`), stride, padding);
}

function norm(p: Params, config: VaeConfig, key: string, x: tf.Tensor4D): tf.Tensor4D {
  return groupNorm(x, config.norm_num_groups, param(p, `${key}.weight`), param(p, `${key}.bias`), NORM_EPS);
}

/** act(norm(x)); GroupNorm and SiLU as one op (fused on wasm/cpu). */
function normAct(p: Params, config: VaeConfig, key: string, x: tf.Tensor4D, fn: VaeActFn): tf.Tensor4D {
  if (fn === 'silu' || fn === 'swish') return groupNormSilu(x, config.norm_num_groups, param(p, `${key}.weight`), param(p, `${key}.bias`), NORM_EPS);
  return act(norm(p, config, key, x), fn) as tf.Tensor4D;
}

/**
 * ResnetBlock2D without time embedding: shortcut(x) + conv2(act(norm2(conv1(act(norm1(x)))))),
 * the shortcut a 1×1 conv when widths differ; output_scale_factor is 1 in the VAE.
 */
function resnet(p: Params, config: VaeConfig, key: string, x: tf.Tensor4D): tf.Tensor4D {
  let h = conv(p, `${key}.conv1`, normAct(p, config, `${key}.norm1`, x, config.act_fn), 1);
  h = conv(p, `${key}.conv2`, normAct(p, config, `${key}.norm2`, h, config.act_fn), 1);
  const widened = param(p, `${key}.conv1.weight`).shape[3] !== x.shape[3];
  const shortcut = widened ? conv(p, `${key}.conv_shortcut`, x, 0) : x;
  return tf.add(shortcut, h);
}

/**
 * Mid-block attention (AttnProcessor with residual_connection): GroupNorm, then one head as
 * wide as the channels over the H·W positions; the input is added back and the sum divided by
 * rescale_output_factor, which is 1 in the VAE.
 */
function spatialAttention(p: Params, config: VaeConfig, key: string, x: tf.Tensor4D): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const n = norm(p, config, `${key}.group_norm`, x).reshape([b, h * w, c]);
  const q = linear(n, param(p, `${key}.to_q.weight`), param(p, `${key}.to_q.bias`));
  const k = linear(n, param(p, `${key}.to_k.weight`), param(p, `${key}.to_k.bias`));
  const v = linear(n, param(p, `${key}.to_v.weight`), param(p, `${key}.to_v.bias`));
  const o = linear(attention(q, k, v, 1), param(p, `${key}.to_out.0.weight`), param(p, `${key}.to_out.0.bias`));
  return tf.add(o.reshape([b, h, w, c]), x);
}

/** One step of the encoder or decoder chain: a block, a resampler or a head. */
type Stage = (x: tf.Tensor4D) => tf.Tensor4D;

/**
 * Runs stages in order, each in its own tidy, freeing every intermediate as soon as the next
 * stage has consumed it, so inference at 512² holds about one block's activations (under
 * tf.variableGrads the tape keeps its own copies of what backprop needs). `x` is not freed.
 */
function runStages(x: tf.Tensor4D, stages: Stage[]): tf.Tensor4D {
  let h = x;
  for (const stage of stages) {
    const next = tf.tidy(() => stage(h));
    if (h !== x && h !== next) h.dispose();
    h = next;
  }
  return h;
}

/** UNetMidBlock2D: resnet, (attention, resnet). */
function midBlockStages(p: Params, config: VaeConfig, key: string): Stage[] {
  const stages: Stage[] = [(x) => resnet(p, config, `${key}.resnets.0`, x)];
  if (config.mid_block_add_attention) stages.push((x) => spatialAttention(p, config, `${key}.attentions.0`, x));
  stages.push((x) => resnet(p, config, `${key}.resnets.1`, x));
  return stages;
}

/** GroupNorm → SiLU → conv 3×3. conv_act is nn.SiLU() in diffusers' Encoder and Decoder whatever act_fn says. */
function outputHead(p: Params, config: VaeConfig, prefix: string): Stage {
  return (x) => conv(p, `${prefix}.conv_out`, normAct(p, config, `${prefix}.conv_norm_out`, x, 'silu'), 1);
}

/** Encoder → quant_conv: image → moments [B, h, w, 2·latent_channels] (mean channels, then logvar). */
function encoderStages(p: Params, config: VaeConfig): Stage[] {
  const stages: Stage[] = [(x) => conv(p, 'encoder.conv_in', x, 1)];
  const nBlocks = config.block_out_channels.length;
  for (let i = 0; i < nBlocks; i++) {
    const key = `encoder.down_blocks.${i}`;
    for (let j = 0; j < config.layers_per_block; j++) stages.push((x) => resnet(p, config, `${key}.resnets.${j}`, x));
    // Downsample2D with padding=0: one zero row/column after (bottom/right), then 3×3 stride 2.
    if (i < nBlocks - 1) stages.push((x) => downsample(p, `${key}.downsamplers.0`, x, 0));
  }
  stages.push(...midBlockStages(p, config, 'encoder.mid_block'), outputHead(p, config, 'encoder'));
  if (config.use_quant_conv) stages.push((x) => conv(p, 'quant_conv', x, 0));
  return stages;
}

/** post_quant_conv → Decoder: latents → image. Up blocks run in order, each with layers_per_block + 1 resnets. */
function decoderStages(p: Params, config: VaeConfig): Stage[] {
  const stages: Stage[] = [];
  if (config.use_post_quant_conv) stages.push((x) => conv(p, 'post_quant_conv', x, 0));
  stages.push((x) => conv(p, 'decoder.conv_in', x, 1), ...midBlockStages(p, config, 'decoder.mid_block'));
  const nBlocks = config.block_out_channels.length;
  for (let i = 0; i < nBlocks; i++) {
    const key = `decoder.up_blocks.${i}`;
    for (let j = 0; j < config.layers_per_block + 1; j++) stages.push((x) => resnet(p, config, `${key}.resnets.${j}`, x));
    if (i < nBlocks - 1) stages.push((x) => upsample(p, `${key}.upsamplers.0`, x, [2 * x.shape[1], 2 * x.shape[2]]));
  }
  stages.push(outputHead(p, config, 'decoder'));
  return stages;
}

// ---- public API ----

/** DiagonalGaussianDistribution of the latents (NHWC [B, h, w, latent_channels] each). */
export interface VaePosterior {
  mean: tf.Tensor4D;
  /** Clamped to [−30, 20]. */
  logvar: tf.Tensor4D;
  /** exp(logvar / 2). */
  std: tf.Tensor4D;
}

function checkNhwc(x: tf.Tensor, channels: number, what: string): void {
  if (x.rank !== 4 || x.shape[3] !== channels) {
    throw new PainterError(`VAE ${what}: expected NHWC [B, H, W, ${channels}], got [${x.shape.join(', ')}]`);
  }
}

/** vae.encode(image).latent_dist for an NHWC image in [−1, 1] whose sides are multiples of vaeLatentFactor. */
export function vaeEncode(params: Params, config: VaeConfig, image: tf.Tensor4D): VaePosterior {
  checkNhwc(image, config.in_channels, 'encode');
  const f = vaeLatentFactor(config);
  if (image.shape[1] % f !== 0 || image.shape[2] % f !== 0) {
    throw new PainterError(`VAE encode: image size ${image.shape[2]}×${image.shape[1]} must be a multiple of ${f}`);
  }
  return tf.tidy(() => {
    const moments = runStages(image, encoderStages(params, config));
    const [mean, rawLogvar] = tf.split(moments, 2, 3) as [tf.Tensor4D, tf.Tensor4D];
    const logvar = tf.clipByValue(rawLogvar, -30, 20);
    const std = tf.exp(tf.mul(logvar, 0.5)) as tf.Tensor4D;
    return { mean, logvar, std } as unknown as tf.TensorContainer;
  }) as unknown as VaePosterior;
}

/** latent_dist.sample() with given standard-normal noise: mean + std·noise. */
export function vaeSample(posterior: VaePosterior, noise: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.add(posterior.mean, tf.mul(posterior.std, noise)));
}

/** vae.decode(latents).sample: raw NHWC latents (already divided by scaling_factor) → NHWC image. */
export function vaeDecode(params: Params, config: VaeConfig, latents: tf.Tensor4D): tf.Tensor4D {
  checkNhwc(latents, config.latent_channels, 'decode');
  return tf.tidy(() => runStages(latents, decoderStages(params, config)));
}

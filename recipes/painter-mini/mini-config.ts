/**
 * painter-mini's architecture: the configs of an SD-shaped miniature, written as the diffusers /
 * transformers config.json fields and parsed with the real parsers, so the bundled model goes
 * through exactly the code paths of a real checkpoint.
 *
 *   - AutoencoderKL, three levels → latent factor 4 (64×64 images ↔ 16×16×4 latents);
 *     scaling_factor is a placeholder until stage 1 is measured (1/std of the latents, as the
 *     LDM authors chose 0.18215 for SD).
 *   - CLIP text encoder (transformers' CLIPTextModel), vocabulary = the world's BPE.
 *   - UNet2DConditionModel on 16×16 latents, cross-attention on the text encoder's width.
 *   - SD 1.x's scheduler class (PNDM, 1000 steps), which DDIM and the other samplers read as
 *     well, with v-prediction (as SD 2.x) and the DDPM paper's linear β schedule (1e-4 → 0.02)
 *     instead of SD's scaled_linear (0.00085 → 0.012); see `miniSchedulerJson`.
 * `MiniSizes` shrinks every width for tests; the defaults are the shipped model.
 */
import { MINI_MODEL_MAX_LENGTH } from './tokenizer-files.js';
import { clipTextParamShapes, countParams, parseClipTextConfig, parseSchedulerConfig, parseUNetConfig, parseVaeConfig, unetParamShapes, vaeLatentFactor, vaeParamShapes, type ClipTextConfig, type SchedulerConfig, type UNetConfig, type VaeConfig } from '../../src/index.js';

export interface MiniSizes {
  /** Square image side in pixels (a multiple of the latent factor 4). */
  imageSize: number;
  vaeChannels: number[];
  vaeLayersPerBlock: number;
  textHidden: number;
  textLayers: number;
  textHeads: number;
  textIntermediate: number;
  unetChannels: number[];
  unetLayersPerBlock: number;
  /** UNet heads per attention block (diffusers' `attention_head_dim` misnomer). */
  unetHeads: number;
  /**
   * GroupNorm groups; must divide every channel count. Keep at least 4 channels per group (SD:
   * 128/32): with one channel per group the norm before conv_out erases each channel's mean, so
   * the decoder could not even reproduce a flat background's colour.
   */
  vaeNormGroups: number;
  unetNormGroups: number;
}

export const MINI_SIZES: MiniSizes = {
  imageSize: 64,
  vaeChannels: [32, 64, 128],
  vaeLayersPerBlock: 1,
  textHidden: 128,
  textLayers: 4,
  textHeads: 4,
  textIntermediate: 512,
  unetChannels: [64, 128, 128],
  unetLayersPerBlock: 1,
  unetHeads: 4,
  vaeNormGroups: 8,
  unetNormGroups: 16,
};

/** Placeholder scaling factor (SD's) until stage 2 measures the trained VAE's latents. */
export const UNMEASURED_SCALING_FACTOR = 0.18215;

export interface MiniConfigs {
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  unet: UNetConfig;
  scheduler: SchedulerConfig;
}

export interface MiniTokenIds {
  vocabSize: number;
  bosTokenId: number;
  eosTokenId: number;
}

export function miniVaeJson(s: MiniSizes, scalingFactor = UNMEASURED_SCALING_FACTOR): Record<string, unknown> {
  const n = s.vaeChannels.length;
  return {
    _class_name: 'AutoencoderKL',
    in_channels: 3,
    out_channels: 3,
    down_block_types: Array(n).fill('DownEncoderBlock2D'),
    up_block_types: Array(n).fill('UpDecoderBlock2D'),
    block_out_channels: s.vaeChannels,
    layers_per_block: s.vaeLayersPerBlock,
    act_fn: 'silu',
    latent_channels: 4,
    norm_num_groups: s.vaeNormGroups,
    sample_size: s.imageSize,
    scaling_factor: scalingFactor,
    shift_factor: null,
    latents_mean: null,
    latents_std: null,
    force_upcast: true,
    use_quant_conv: true,
    use_post_quant_conv: true,
    mid_block_add_attention: true,
  };
}

export function miniTextEncoderJson(s: MiniSizes, ids: MiniTokenIds): Record<string, unknown> {
  return {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    vocab_size: ids.vocabSize,
    hidden_size: s.textHidden,
    intermediate_size: s.textIntermediate,
    num_hidden_layers: s.textLayers,
    num_attention_heads: s.textHeads,
    max_position_embeddings: MINI_MODEL_MAX_LENGTH,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    bos_token_id: ids.bosTokenId,
    eos_token_id: ids.eosTokenId,
    // The tokenizer pads with EOS (as SD 1.x's does); the model never reads pad_token_id.
    pad_token_id: ids.eosTokenId,
    projection_dim: s.textHidden,
  };
}

export function miniUNetJson(s: MiniSizes): Record<string, unknown> {
  const n = s.unetChannels.length;
  // SD's layout: cross-attention at every level but the lowest-resolution one.
  const down = s.unetChannels.map((_, i) => (i < n - 1 ? 'CrossAttnDownBlock2D' : 'DownBlock2D'));
  const up = [...down].reverse().map((d) => (d === 'DownBlock2D' ? 'UpBlock2D' : 'CrossAttnUpBlock2D'));
  return {
    _class_name: 'UNet2DConditionModel',
    sample_size: s.imageSize / 4,
    in_channels: 4,
    out_channels: 4,
    center_input_sample: false,
    flip_sin_to_cos: true,
    freq_shift: 0,
    down_block_types: down,
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    up_block_types: up,
    only_cross_attention: false,
    block_out_channels: s.unetChannels,
    layers_per_block: s.unetLayersPerBlock,
    downsample_padding: 1,
    mid_block_scale_factor: 1,
    act_fn: 'silu',
    norm_num_groups: s.unetNormGroups,
    norm_eps: 1e-5,
    cross_attention_dim: s.textHidden,
    transformer_layers_per_block: 1,
    attention_head_dim: s.unetHeads,
    num_attention_heads: null,
    dual_cross_attention: false,
    use_linear_projection: false,
    upcast_attention: false,
    resnet_time_scale_shift: 'default',
    time_embedding_type: 'positional',
    time_embedding_dim: null,
    class_embed_type: null,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
  };
}

/**
 * SD 1.x's scheduler_config.json with DDPM's linear β schedule. SD's scaled_linear schedule was
 * made for 64×64 latents; on 16×16 it never destroys an image's mean colour: at t = 999 the SNR
 * of a pixel is 4.7e-3, but the mean over 256 latent pixels keeps SNR 1.2, and it is ≥ 1 at every
 * t. A model trained so reads the background colour off the noise instead of learning it from
 * the caption, and samples take their colours from the seed (measured: after 860 steps the
 * caption changed ε̂ by 5%, and four prompts on one seed drew the same picture). The linear
 * schedule takes that mean's SNR to 0.07 at t = 900 and 0.01 at t = 999 (Chen 2023, "On the
 * importance of noise scheduling for diffusion models": smaller images need noisier schedules).
 * There the caption decides the picture, and an ε target weighs an error in the predicted image
 * by SNR (2.7e-4 at t = 900): v-prediction weighs it by SNR + 1 (Salimans & Ho 2022), so the
 * model learns its captions from the steps that need them.
 */
export function miniSchedulerJson(): Record<string, unknown> {
  return {
    _class_name: 'PNDMScheduler',
    num_train_timesteps: 1000,
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: 'linear',
    trained_betas: null,
    prediction_type: 'v_prediction',
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    clip_sample: false,
  };
}

/** Every config of the miniature, validated by the parsers that load real checkpoints. */
export function miniConfigs(s: MiniSizes, ids: MiniTokenIds, scalingFactor = UNMEASURED_SCALING_FACTOR): MiniConfigs {
  if (s.imageSize % 4 !== 0) throw new RangeError(`painter-mini: image size ${s.imageSize} must be a multiple of 4`);
  const vae = parseVaeConfig(miniVaeJson(s, scalingFactor), 'painter-mini vae');
  if (vaeLatentFactor(vae) !== 4) throw new RangeError(`painter-mini: the VAE must have 3 levels (latent factor 4), got ${s.vaeChannels.length}`);
  return {
    vae,
    textEncoder: parseClipTextConfig(miniTextEncoderJson(s, ids), 'painter-mini text_encoder'),
    unet: parseUNetConfig(miniUNetJson(s), 'painter-mini unet'),
    scheduler: parseSchedulerConfig(miniSchedulerJson(), 'painter-mini scheduler'),
  };
}

export interface MiniSizeReport {
  vae: number;
  textEncoder: number;
  unet: number;
  total: number;
  /** Bytes of the weights stored as float16 (safetensors headers not counted). */
  float16Bytes: number;
}

export function miniParamCounts(c: Pick<MiniConfigs, 'vae' | 'textEncoder' | 'unet'>): MiniSizeReport {
  const vae = countParams(vaeParamShapes(c.vae));
  const textEncoder = countParams(clipTextParamShapes(c.textEncoder));
  const unet = countParams(unetParamShapes(c.unet));
  const total = vae + textEncoder + unet;
  return { vae, textEncoder, unet, total, float16Bytes: total * 2 };
}

/** The shipped package allows at most this much for the model's weights. */
export const MINI_MAX_BYTES = 30 * 1024 * 1024;

export function describeMiniSize(r: MiniSizeReport): string {
  const m = (n: number) => `${(n / 1e6).toFixed(2)}M`;
  return `parameters: vae ${m(r.vae)}, text encoder ${m(r.textEncoder)}, unet ${m(r.unet)}, total ${m(r.total)}; float16 ${(r.float16Bytes / 2 ** 20).toFixed(1)} MiB (limit ${MINI_MAX_BYTES / 2 ** 20} MiB)`;
}

/**
 * What a single-file checkpoint is, told from its keys and tensor shapes alone (no tensor data is
 * read), as diffusers' `from_single_file` tells it (single_file_utils.py, infer_diffusers_model_type):
 *
 * - the family: SD 2.x by the OpenCLIP text encoder (`cond_stage_model.model.*`; diffusers looks
 *   at the cross-attention width 1024, which every real SD 2 checkpoint has too), inpainting by
 *   the UNet's first conv taking 9 channels, and for SD 2.x v-prediction unless the checkpoint
 *   records global_step 875000 (SD 2.0-base, the one 512 ε model; diffusers' rule);
 * - the layer sizes: channels, levels, res-blocks per level, attention placement and depth,
 *   widths and layer counts, read off the tensors, over the family's shipped config;
 * - what shapes cannot show comes from the family: the UNet's heads (SD 1.x: 8 per block; SD 2.x:
 *   64-channel heads), CLIP's 64-wide text heads, the tokenizer (CLIP's 49408 tokens). Where
 *   the checkpoint contradicts those (a width no 64-wide head divides, another vocabulary), the
 *   caller is told what cannot be told, so it can ask for `--config`.
 */
import { CLIP_VOCAB_SIZE } from '../core/tokenizer/clip-bpe-vocab.js';
import type { SdFamily } from './bundled-configs.js';
import { CLIP_PREFIX, OPENCLIP_PREFIX, UNET_PREFIX, VAE_PREFIX } from './single-file-keys.js';

export type PredictionType = 'epsilon' | 'v_prediction';

/** Tensor shapes by key (PyTorch layout), e.g. a WeightSource's entries. */
export type ShapeMap = ReadonlyMap<string, { readonly shape: readonly number[] }>;

type Json = Record<string, unknown>;

/** The step count SD 2.0-base was released at: diffusers' one marker of an SD 2.x ε checkpoint. */
const SD2_BASE_GLOBAL_STEP = 875000;
/** Width of one attention head in SD 2.x's UNet (num_head_channels) and in both CLIP text towers. */
const HEAD_CHANNELS = 64;

/** The family of a checkpoint, or undefined when it holds no SD text encoder. `predictionType` decides SD 2.x's. */
export function inferFamily(entries: ShapeMap, globalStep?: number, predictionType?: PredictionType): SdFamily | undefined {
  const keys = [...entries.keys()];
  const sd2 = keys.some((k) => k.startsWith(OPENCLIP_PREFIX));
  if (!sd2 && !keys.some((k) => k.startsWith(CLIP_PREFIX))) return undefined;
  const inpaint = entries.get(`${UNET_PREFIX}input_blocks.0.0.weight`)?.shape[1] === 9;
  if (!sd2) return inpaint ? 'sd1-inpaint' : 'sd1';
  if (inpaint) return 'sd2-inpaint';
  const v = predictionType !== undefined ? predictionType === 'v_prediction' : globalStep !== SD2_BASE_GLOBAL_STEP;
  return v ? 'sd2-v' : 'sd2';
}

/** How many consecutive indices from 0 satisfy `has`. */
function countWhile(has: (i: number) => boolean): number {
  let n = 0;
  while (has(n)) n++;
  return n;
}

/** One value when all are equal, else the list (diffusers' int-or-list config fields). */
function uniform(values: number[]): number | number[] {
  return values.every((v) => v === values[0]) ? values[0]! : values;
}

interface Level {
  channels: number;
  layers: number;
  /** Transformer blocks of each attention in this level (empty: no attention). */
  depths: number[];
}

/** Shape lookup over a checkpoint's entries, and its keys for searches. */
interface Shapes {
  of(key: string): readonly number[] | undefined;
  keys: readonly string[];
}

function inferUNet(s: Shapes, base: Json, sd2: boolean, problems: string[]): Json {
  const u = (k: string) => s.of(UNET_PREFIX + k);
  const convIn = u('input_blocks.0.0.weight');
  const convOut = u('out.2.weight');
  const time = u('time_embed.0.weight');
  if (!convIn || !convOut || !time) {
    problems.push(`no UNet (${UNET_PREFIX}input_blocks.0.0, out.2 and time_embed.0 weights)`);
    return base;
  }
  // input_blocks: a res-block (with its attention at .1) per layer, a downsampler (.0.op) between levels.
  const levels: Level[] = [{ channels: 0, layers: 0, depths: [] }];
  for (let n = 1; ; n++) {
    if (u(`input_blocks.${n}.0.op.weight`)) {
      levels.push({ channels: 0, layers: 0, depths: [] });
      continue;
    }
    const conv2 = u(`input_blocks.${n}.0.out_layers.3.weight`);
    if (!conv2) break;
    const level = levels.at(-1)!;
    level.channels = conv2[0]!;
    level.layers++;
    const depth = countWhile((j) => u(`input_blocks.${n}.1.transformer_blocks.${j}.attn1.to_q.weight`) !== undefined);
    if (depth > 0) level.depths.push(depth);
  }
  if (levels.some((l) => l.layers === 0)) {
    problems.push('the UNet has a level without res-blocks');
    return base;
  }
  // output_blocks mirror them: layers + 1 res-blocks per level, deepest first.
  const upAttention: boolean[] = [];
  let o = 0;
  for (let i = 0; i < levels.length; i++) {
    let attention = false;
    for (let j = 0; j <= levels[levels.length - 1 - i]!.layers; j++, o++) attention ||= u(`output_blocks.${o}.1.proj_in.weight`) !== undefined;
    upAttention.push(attention);
  }
  const midAttention = u('middle_block.1.proj_in.weight') !== undefined;
  const keys = s.keys.filter((k) => k.startsWith(UNET_PREFIX));
  const projIn = keys.find((k) => k.endsWith('.proj_in.weight'));
  const toK = keys.find((k) => k.endsWith('.attn2.to_k.weight'));
  const channels = levels.map((l) => l.channels);
  const depths = levels.flatMap((l) => l.depths);
  const json: Json = {
    ...base,
    in_channels: convIn[1],
    out_channels: convOut[0],
    conv_in_kernel: convIn[2],
    conv_out_kernel: convOut[2],
    block_out_channels: channels,
    layers_per_block: uniform(levels.map((l) => l.layers)),
    down_block_types: levels.map((l) => (l.depths.length > 0 ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    up_block_types: upAttention.map((a) => (a ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
    mid_block_type: midAttention ? 'UNetMidBlock2DCrossAttn' : null,
    transformer_layers_per_block: depths.length === 0 ? 1 : uniform(levels.map((l) => l.depths[0] ?? depths[0]!)),
    time_embedding_dim: time[0] === 4 * channels[0]! ? null : time[0],
  };
  if (toK) json['cross_attention_dim'] = s.of(toK)![1];
  if (projIn) json['use_linear_projection'] = s.of(projIn)!.length === 2;
  if (sd2) {
    // SD 2.x: heads of 64 channels (num_head_channels), so each block's head count is its width / 64.
    const attends = levels.map((l, i) => l.depths.length > 0 || upAttention[levels.length - 1 - i]! || (midAttention && i === levels.length - 1));
    const odd = channels.filter((c, i) => attends[i] && c % HEAD_CHANNELS !== 0);
    if (odd.length > 0) problems.push(`the UNet's attention heads (SD 2.x heads are ${HEAD_CHANNELS} channels wide, but a block is ${odd[0]} wide)`);
    json['attention_head_dim'] = channels.map((c) => Math.max(1, Math.floor(c / HEAD_CHANNELS)));
  }
  return json;
}

function inferVae(s: Shapes, base: Json, problems: string[]): Json {
  const v = (k: string) => s.of(VAE_PREFIX + k);
  const levels = countWhile((i) => v(`encoder.down.${i}.block.0.conv1.weight`) !== undefined);
  const convIn = v('encoder.conv_in.weight');
  const convOut = v('decoder.conv_out.weight');
  const latent = v('decoder.conv_in.weight');
  if (levels === 0 || !convIn || !convOut || !latent) {
    problems.push(`no VAE (${VAE_PREFIX}encoder.down.*, encoder.conv_in, decoder.conv_in and decoder.conv_out weights)`);
    return base;
  }
  return {
    ...base,
    in_channels: convIn[1],
    out_channels: convOut[0],
    latent_channels: latent[1],
    block_out_channels: Array.from({ length: levels }, (_, i) => v(`encoder.down.${i}.block.0.conv1.weight`)![0]),
    layers_per_block: countWhile((j) => v(`encoder.down.0.block.${j}.conv1.weight`) !== undefined),
    down_block_types: new Array(levels).fill('DownEncoderBlock2D'),
    up_block_types: new Array(levels).fill('UpDecoderBlock2D'),
    use_quant_conv: v('quant_conv.weight') !== undefined,
    use_post_quant_conv: v('post_quant_conv.weight') !== undefined,
    mid_block_add_attention: v('encoder.mid.attn_1.q.weight') !== undefined,
  };
}

function inferText(s: Shapes, base: Json, sd2: boolean, problems: string[]): Json {
  let tokens: readonly number[] | undefined;
  let positions: readonly number[] | undefined;
  let fc1: readonly number[] | undefined;
  let layers: number;
  if (sd2) {
    const t = (k: string) => s.of(OPENCLIP_PREFIX + k);
    [tokens, positions, fc1] = [t('token_embedding.weight'), t('positional_embedding'), t('transformer.resblocks.0.mlp.c_fc.weight')];
    const blocks = countWhile((l) => t(`transformer.resblocks.${l}.attn.in_proj_weight`) !== undefined);
    // An original OpenCLIP tower (with its text_projection) holds every layer and SD 2 reads the
    // penultimate one's output; a file converted from diffusers holds only the layers it uses.
    layers = t('text_projection') !== undefined ? blocks - 1 : blocks;
  } else {
    const t = (k: string) => s.of(`${CLIP_PREFIX}text_model.${k}`) ?? s.of(CLIP_PREFIX + k);
    [tokens, positions, fc1] = [t('embeddings.token_embedding.weight'), t('embeddings.position_embedding.weight'), t('encoder.layers.0.mlp.fc1.weight')];
    layers = countWhile((l) => t(`encoder.layers.${l}.self_attn.q_proj.weight`) !== undefined);
  }
  if (!tokens || !positions || !fc1 || layers < 1) {
    problems.push(`no complete text encoder under ${sd2 ? OPENCLIP_PREFIX : CLIP_PREFIX}`);
    return base;
  }
  const [vocab, width] = [tokens[0]!, tokens[1]!];
  if (width % HEAD_CHANNELS !== 0) problems.push(`the text encoder's attention heads (CLIP's heads are ${HEAD_CHANNELS} wide, but it is ${width} wide)`);
  if (vocab !== CLIP_VOCAB_SIZE) problems.push(`its tokenizer (the text encoder has ${vocab} tokens, not CLIP's ${CLIP_VOCAB_SIZE})`);
  return {
    ...base,
    vocab_size: vocab,
    hidden_size: width,
    max_position_embeddings: positions[0],
    intermediate_size: fc1[0],
    num_hidden_layers: layers,
    num_attention_heads: Math.max(1, Math.floor(width / HEAD_CHANNELS)),
  };
}

export interface InferredConfigJson {
  unet: Json;
  vae: Json;
  textEncoder: Json;
  /** What the checkpoint cannot tell (empty when every config was inferred). */
  problems: string[];
}

/**
 * The UNet, VAE and text encoder config.json of a checkpoint: the family's shipped `base`
 * configs with every size the tensors show replaced by the checkpoint's own.
 */
export function inferConfigJson(entries: ShapeMap, family: SdFamily, base: { unet: Json; vae: Json; textEncoder: Json }): InferredConfigJson {
  const shapes: Shapes = { of: (key) => entries.get(key)?.shape, keys: [...entries.keys()] };
  const sd2 = family.startsWith('sd2');
  const problems: string[] = [];
  return {
    unet: inferUNet(shapes, base.unet, sd2, problems),
    vae: inferVae(shapes, base.vae, problems),
    textEncoder: inferText(shapes, base.textEncoder, sd2, problems),
    problems,
  };
}

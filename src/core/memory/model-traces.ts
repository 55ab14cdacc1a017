/**
 * Symbolic twins of the forward passes in core/models (unet.ts + unet-blocks.ts, vae.ts,
 * clip-text.ts): the same tidy scopes and the same kernel outputs, walked over the checkpoint's
 * key set (the models' ParamShapes), so block structure comes from the same place as loading.
 */
import type { ClipTextConfig } from '../models/clip-text.js';
import type { UNetConfig } from '../models/unet.js';
import type { VaeConfig } from '../models/vae.js';
import type { ParamShapes } from '../params.js';
import { attention, concat, conv2d, ew, gelu, groupNorm, groupNormSilu, layerNorm, linear, quickGelu, relu, silu, split, upsampleNearest2x } from './sym-ops.js';
import type { MemoryTrace, Sym } from './trace.js';

/** The symbolic weight for a checkpoint key (trainable or not; LoRA-merged where adapted). */
export type WeightSource = (key: string) => Sym;

/** Weights of a key set as frozen symbols. */
export function frozenWeights(t: MemoryTrace, shapes: ParamShapes): WeightSource {
  return (key) => {
    const shape = shapes.get(key);
    if (!shape) throw new Error(`memory trace: no weight "${key}" in the model's key set`);
    return t.weight(shape);
  };
}

function perBlock(v: number | number[], n: number): number[] {
  return Array.isArray(v) ? v : Array<number>(n).fill(v);
}

// ---------------------------------------------------------------------------------------------
// UNet
// ---------------------------------------------------------------------------------------------

/** What every UNet block reads: the trace, its weights and key set, the GroupNorm group count. */
interface UNetCtx {
  t: MemoryTrace;
  w: WeightSource;
  shapes: ParamShapes;
  groups: number;
  /** Gradient checkpointing: every resnet and transformer recomputed in the backward pass. */
  checkpoint: boolean;
}

/** A block, checkpointed when the context says so (MemoryTrace.checkpoint). */
function block(c: UNetCtx, inputs: Sym[], fn: (c: UNetCtx, inputs: readonly Sym[]) => Sym): Sym {
  if (!c.checkpoint) return fn(c, inputs);
  return c.t.checkpoint(inputs, (t, ins) => fn({ ...c, t }, ins));
}

function resnetAt(c: UNetCtx, k: string, x: Sym, tembAct: Sym, scale: number): Sym {
  return block(c, [x, tembAct], (cc, [a, b]) => unetResnet(cc, k, a!, b!, scale));
}

function transformerAt(c: UNetCtx, k: string, x: Sym, context: Sym, heads: number): Sym {
  return block(c, [x, context], (cc, [a, b]) => transformer2d(cc, k, a!, b!, heads));
}

function unetResnet(c: UNetCtx, k: string, x: Sym, tembAct: Sym, scale: number): Sym {
  const { t, w } = c;
  const normSilu = (s: Sym, name: string) => groupNormSilu(t, s, c.groups, w(`${k}.${name}.weight`), w(`${k}.${name}.bias`));
  return t.tidy(() => {
    let h = conv2d(t, normSilu(x, 'norm1'), w(`${k}.conv1.weight`), w(`${k}.conv1.bias`), 1, 1);
    h = ew(t, h, linear(t, tembAct, w(`${k}.time_emb_proj.weight`), w(`${k}.time_emb_proj.bias`)));
    h = conv2d(t, normSilu(h, 'norm2'), w(`${k}.conv2.weight`), w(`${k}.conv2.bias`), 1, 1);
    const widened = c.shapes.has(`${k}.conv_shortcut.weight`);
    const shortcut = widened ? conv2d(t, x, w(`${k}.conv_shortcut.weight`), w(`${k}.conv_shortcut.bias`), 1, 0) : x;
    let y = ew(t, h, shortcut);
    if (scale !== 1) y = ew(t, y);
    return y;
  });
}

function attentionBlock(c: UNetCtx, k: string, x: Sym, context: Sym, heads: number): Sym {
  const { t, w } = c;
  const q = linear(t, x, w(`${k}.to_q.weight`));
  const kk = linear(t, context, w(`${k}.to_k.weight`));
  const v = linear(t, context, w(`${k}.to_v.weight`));
  return linear(t, attention(t, q, kk, v, heads, undefined, { checkpointSlices: c.checkpoint }), w(`${k}.to_out.0.weight`), w(`${k}.to_out.0.bias`));
}

function feedForward(c: UNetCtx, k: string, x: Sym): Sym {
  const { t, w } = c;
  const proj = linear(t, x, w(`${k}.net.0.proj.weight`), w(`${k}.net.0.proj.bias`));
  const [hidden, gate] = split(t, proj, 2, -1) as [Sym, Sym];
  return linear(t, ew(t, hidden, gelu(t, gate)), w(`${k}.net.2.weight`), w(`${k}.net.2.bias`));
}

/** A 1×1 conv weight used as a Linear, or a Linear. */
function projection(c: UNetCtx, k: string, x: Sym): Sym {
  const weight = c.w(`${k}.weight`);
  const w2 = weight.shape.length === 4 ? c.t.reshape(weight, [weight.shape[2]!, weight.shape[3]!]) : weight;
  return linear(c.t, x, w2, c.w(`${k}.bias`));
}

function transformer2d(c: UNetCtx, k: string, x: Sym, context: Sym, heads: number): Sym {
  const { t, w } = c;
  return t.tidy(() => {
    const [n, h, wd, ch] = x.shape as [number, number, number, number];
    const normed = groupNorm(t, x, c.groups, w(`${k}.norm.weight`), w(`${k}.norm.bias`));
    let tokens = projection(c, `${k}.proj_in`, t.reshape(normed, [n, h * wd, ch]));
    for (let j = 0; c.shapes.has(`${k}.transformer_blocks.${j}.norm1.weight`); j++) {
      const b = `${k}.transformer_blocks.${j}`;
      const ln = (s: Sym, name: string) => layerNorm(t, s, w(`${b}.${name}.weight`), w(`${b}.${name}.bias`));
      const n1 = ln(tokens, 'norm1');
      tokens = ew(t, tokens, attentionBlock(c, `${b}.attn1`, n1, n1, heads));
      tokens = ew(t, tokens, attentionBlock(c, `${b}.attn2`, ln(tokens, 'norm2'), context, heads));
      tokens = ew(t, tokens, feedForward(c, `${b}.ff`, ln(tokens, 'norm3')));
    }
    const out = t.reshape(projection(c, `${k}.proj_out`, tokens), x.shape);
    return ew(t, out, x);
  });
}

function downsample(t: MemoryTrace, w: WeightSource, k: string, x: Sym, padding: number): Sym {
  return t.tidy(() => {
    const [n, h, wd, ch] = x.shape as [number, number, number, number];
    const input = padding === 0 ? t.op([n, h + 1, wd + 1, ch], [x]) : x;
    return conv2d(t, input, w(`${k}.conv.weight`), w(`${k}.conv.bias`), 2, padding);
  });
}

function upsample(t: MemoryTrace, w: WeightSource, k: string, x: Sym, size: [number, number]): Sym {
  return t.tidy(() => {
    const [n, h, wd, ch] = x.shape as [number, number, number, number];
    let y = upsampleNearest2x(t, x);
    if (size[0] !== 2 * h || size[1] !== 2 * wd) y = t.op([n, size[0], size[1], ch], [y]);
    return conv2d(t, y, w(`${k}.conv.weight`), w(`${k}.conv.bias`), 1, 1);
  });
}

/** unetForward on sample [B, h, w, C] and context [B, L, D]; returns ε̂ [B, h, w, C_out]. */
export function traceUNet(t: MemoryTrace, config: UNetConfig, shapes: ParamShapes, w: WeightSource, sample: Sym, context: Sym, opts: { checkpoint?: boolean } = {}): Sym {
  const c: UNetCtx = { t, w, shapes, groups: config.norm_num_groups, checkpoint: opts.checkpoint ?? false };
  const n = config.block_out_channels.length;
  const heads = perBlock(config.attention_head_dim, n);
  const batch = sample.shape[0]!;
  return t.tidy(() => {
    // 1. time embedding: a handful of [B, 4·c0] tensors.
    const features = t.op([batch, config.block_out_channels[0]!], [t.op([batch], [])]);
    let emb = linear(t, features, w('time_embedding.linear_1.weight'), w('time_embedding.linear_1.bias'));
    emb = linear(t, silu(t, emb), w('time_embedding.linear_2.weight'), w('time_embedding.linear_2.bias'));
    const tembAct = silu(t, emb);
    // 2. input; 3. down blocks, every output a skip.
    let x = config.center_input_sample ? ew(t, ew(t, sample), sample) : sample;
    x = conv2d(t, x, w('conv_in.weight'), w('conv_in.bias'), 1, (config.conv_in_kernel - 1) / 2);
    const skips: Sym[] = [x];
    for (let i = 0; i < n; i++) {
      const p = `down_blocks.${i}`;
      for (let j = 0; shapes.has(`${p}.resnets.${j}.conv1.weight`); j++) {
        x = resnetAt(c, `${p}.resnets.${j}`, x, tembAct, 1);
        if (shapes.has(`${p}.attentions.${j}.norm.weight`)) x = transformerAt(c, `${p}.attentions.${j}`, x, context, heads[i]!);
        skips.push(x);
      }
      if (shapes.has(`${p}.downsamplers.0.conv.weight`)) {
        x = downsample(t, w, `${p}.downsamplers.0`, x, config.downsample_padding);
        skips.push(x);
      }
    }
    // 4. mid block
    if (shapes.has('mid_block.resnets.0.conv1.weight')) {
      x = resnetAt(c, 'mid_block.resnets.0', x, tembAct, config.mid_block_scale_factor);
      for (let j = 0; shapes.has(`mid_block.attentions.${j}.norm.weight`); j++) {
        x = transformerAt(c, `mid_block.attentions.${j}`, x, context, heads[n - 1]!);
        x = resnetAt(c, `mid_block.resnets.${j + 1}`, x, tembAct, config.mid_block_scale_factor);
      }
    }
    // 5. up blocks, each resnet on [x, skip] concatenated.
    for (let i = 0; i < n; i++) {
      const p = `up_blocks.${i}`;
      for (let j = 0; shapes.has(`${p}.resnets.${j}.conv1.weight`); j++) {
        const skip = skips.pop() ?? x;
        x = resnetAt(c, `${p}.resnets.${j}`, concat(t, [x, skip], 3), tembAct, 1);
        if (shapes.has(`${p}.attentions.${j}.norm.weight`)) x = transformerAt(c, `${p}.attentions.${j}`, x, context, heads[n - 1 - i]!);
      }
      if (shapes.has(`${p}.upsamplers.0.conv.weight`)) {
        const next = skips[skips.length - 1];
        const size: [number, number] = next ? [next.shape[1]!, next.shape[2]!] : [x.shape[1]! * 2, x.shape[2]! * 2];
        x = upsample(t, w, `${p}.upsamplers.0`, x, size);
      }
    }
    // 6. output
    x = groupNormSilu(t, x, c.groups, w('conv_norm_out.weight'), w('conv_norm_out.bias'));
    return conv2d(t, x, w('conv_out.weight'), w('conv_out.bias'), 1, (config.conv_out_kernel - 1) / 2);
  });
}

// ---------------------------------------------------------------------------------------------
// VAE
// ---------------------------------------------------------------------------------------------

type Stage = (x: Sym) => Sym;

function vaeAct(t: MemoryTrace, fn: VaeConfig['act_fn'], x: Sym): Sym {
  switch (fn) {
    case 'silu':
    case 'swish':
      return silu(t, x);
    case 'gelu':
      return gelu(t, x);
    case 'relu':
      return relu(t, x);
  }
}

/** vae.ts normAct: GroupNorm then the activation, one fused op for SiLU. */
function vaeNormAct(t: MemoryTrace, config: VaeConfig, w: WeightSource, key: string, x: Sym, fn: VaeConfig['act_fn']): Sym {
  const gamma = w(`${key}.weight`);
  const beta = w(`${key}.bias`);
  if (fn === 'silu' || fn === 'swish') return groupNormSilu(t, x, config.norm_num_groups, gamma, beta);
  return vaeAct(t, fn, groupNorm(t, x, config.norm_num_groups, gamma, beta));
}

function vaeResnet(t: MemoryTrace, config: VaeConfig, w: WeightSource, k: string, x: Sym): Sym {
  let h = conv2d(t, vaeNormAct(t, config, w, `${k}.norm1`, x, config.act_fn), w(`${k}.conv1.weight`), w(`${k}.conv1.bias`), 1, 1);
  h = conv2d(t, vaeNormAct(t, config, w, `${k}.norm2`, h, config.act_fn), w(`${k}.conv2.weight`), w(`${k}.conv2.bias`), 1, 1);
  const widened = w(`${k}.conv1.weight`).shape[3] !== x.shape[3];
  const shortcut = widened ? conv2d(t, x, w(`${k}.conv_shortcut.weight`), w(`${k}.conv_shortcut.bias`), 1, 0) : x;
  return ew(t, h, shortcut);
}

function vaeAttention(t: MemoryTrace, config: VaeConfig, w: WeightSource, k: string, x: Sym): Sym {
  const [b, h, wd, c] = x.shape as [number, number, number, number];
  const n = t.reshape(groupNorm(t, x, config.norm_num_groups, w(`${k}.group_norm.weight`), w(`${k}.group_norm.bias`)), [b, h * wd, c]);
  const q = linear(t, n, w(`${k}.to_q.weight`), w(`${k}.to_q.bias`));
  const kk = linear(t, n, w(`${k}.to_k.weight`), w(`${k}.to_k.bias`));
  const v = linear(t, n, w(`${k}.to_v.weight`), w(`${k}.to_v.bias`));
  const o = linear(t, attention(t, q, kk, v, 1), w(`${k}.to_out.0.weight`), w(`${k}.to_out.0.bias`));
  return ew(t, t.reshape(o, x.shape), x);
}

function midStages(t: MemoryTrace, config: VaeConfig, shapes: ParamShapes, w: WeightSource, k: string): Stage[] {
  const stages: Stage[] = [(x) => vaeResnet(t, config, w, `${k}.resnets.0`, x)];
  if (shapes.has(`${k}.attentions.0.to_q.weight`)) stages.push((x) => vaeAttention(t, config, w, `${k}.attentions.0`, x));
  stages.push((x) => vaeResnet(t, config, w, `${k}.resnets.1`, x));
  return stages;
}

function headStage(t: MemoryTrace, config: VaeConfig, w: WeightSource, prefix: string): Stage {
  return (x) => conv2d(t, vaeNormAct(t, config, w, `${prefix}.conv_norm_out`, x, 'silu'), w(`${prefix}.conv_out.weight`), w(`${prefix}.conv_out.bias`), 1, 1);
}

/** vae.ts runStages: each stage in its own tidy, the previous stage's output freed at once. */
function runStages(t: MemoryTrace, x: Sym, stages: Stage[]): Sym {
  let h = x;
  for (const stage of stages) {
    const next = t.tidy(() => stage(h));
    if (h !== x) t.dispose(h);
    h = next;
  }
  return h;
}

/** vaeEncode on an image [B, H, W, C]: returns the posterior's [mean, logvar, std]. */
export function traceVaeEncode(t: MemoryTrace, config: VaeConfig, shapes: ParamShapes, w: WeightSource, image: Sym): Sym[] {
  return t.tidy(() => {
    const stages: Stage[] = [(x) => conv2d(t, x, w('encoder.conv_in.weight'), w('encoder.conv_in.bias'), 1, 1)];
    for (let i = 0; shapes.has(`encoder.down_blocks.${i}.resnets.0.conv1.weight`); i++) {
      const k = `encoder.down_blocks.${i}`;
      for (let j = 0; shapes.has(`${k}.resnets.${j}.conv1.weight`); j++) stages.push((x) => vaeResnet(t, config, w, `${k}.resnets.${j}`, x));
      if (shapes.has(`${k}.downsamplers.0.conv.weight`)) stages.push((x) => downsample(t, w, `${k}.downsamplers.0`, x, 0));
    }
    stages.push(...midStages(t, config, shapes, w, 'encoder.mid_block'), headStage(t, config, w, 'encoder'));
    if (shapes.has('quant_conv.weight')) stages.push((x) => conv2d(t, x, w('quant_conv.weight'), w('quant_conv.bias'), 1, 0));
    const moments = runStages(t, image, stages);
    const [mean, rawLogvar] = split(t, moments, 2, 3) as [Sym, Sym];
    const logvar = ew(t, rawLogvar);
    const std = ew(t, ew(t, logvar));
    return [mean, logvar, std];
  });
}

/** vaeDecode on raw latents [B, h, w, C]: returns the image [B, H, W, out_channels]. */
export function traceVaeDecode(t: MemoryTrace, config: VaeConfig, shapes: ParamShapes, w: WeightSource, latents: Sym): Sym {
  return t.tidy(() => {
    const stages: Stage[] = [];
    if (shapes.has('post_quant_conv.weight')) stages.push((x) => conv2d(t, x, w('post_quant_conv.weight'), w('post_quant_conv.bias'), 1, 0));
    stages.push((x) => conv2d(t, x, w('decoder.conv_in.weight'), w('decoder.conv_in.bias'), 1, 1), ...midStages(t, config, shapes, w, 'decoder.mid_block'));
    for (let i = 0; shapes.has(`decoder.up_blocks.${i}.resnets.0.conv1.weight`); i++) {
      const k = `decoder.up_blocks.${i}`;
      for (let j = 0; shapes.has(`${k}.resnets.${j}.conv1.weight`); j++) stages.push((x) => vaeResnet(t, config, w, `${k}.resnets.${j}`, x));
      if (shapes.has(`${k}.upsamplers.0.conv.weight`)) stages.push((x) => upsample(t, w, `${k}.upsamplers.0`, x, [2 * x.shape[1]!, 2 * x.shape[2]!]));
    }
    stages.push(headStage(t, config, w, 'decoder'));
    return runStages(t, latents, stages);
  });
}

// ---------------------------------------------------------------------------------------------
// CLIP text encoder
// ---------------------------------------------------------------------------------------------

export interface ClipTraceOptions {
  batch: number;
  length: number;
  /** Layers skipped at the end (clip skip). */
  skip?: number;
  /** Textual Inversion: `extra` trainable rows looked up beside the frozen table. */
  extraRows?: Sym;
}

function clipActivation(t: MemoryTrace, config: ClipTextConfig, x: Sym): Sym {
  switch (config.hidden_act) {
    case 'quick_gelu':
      return quickGelu(t, x);
    case 'gelu':
      return gelu(t, x);
  }
}

/** clipTextForward: returns the last hidden state [B, L, D]. */
export function traceClipText(t: MemoryTrace, config: ClipTextConfig, w: WeightSource, opts: ClipTraceOptions): Sym {
  const { batch, length } = opts;
  const d = config.hidden_size;
  const ids = t.input([batch, length], 'int32');
  return t.tidy(() => {
    const positions = t.op([length, d], []);
    const table = w('text_model.embeddings.token_embedding.weight');
    let emb: Sym;
    if (opts.extraRows) {
      // lookupWithExtra: masks over ids, two gathers, a broadcast mask, where.
      const isExtra = t.op([batch, length], [ids], 'bool');
      const fromTable = t.op([batch, length, d], [table, t.op([batch, length], [ids], 'int32')]);
      const fromExtra = t.op([batch, length, d], [opts.extraRows, t.op([batch, length], [t.op([batch, length], [ids], 'int32')], 'int32')]);
      const mask = t.op([batch, length, d], [isExtra], 'bool');
      emb = t.op([batch, length, d], [mask, fromExtra, fromTable]);
    } else {
      emb = t.op([batch, length, d], [table, ids]);
    }
    let h = ew(t, emb, positions);
    const ones = t.op([length, length], []);
    const mask = ew(t, ew(t, t.op([length, length], [ones])));
    for (let i = 0; i < config.num_hidden_layers - (opts.skip ?? 0); i++) {
      const k = `text_model.encoder.layers.${i}`;
      const x = layerNorm(t, h, w(`${k}.layer_norm1.weight`), w(`${k}.layer_norm1.bias`));
      const q = linear(t, x, w(`${k}.self_attn.q_proj.weight`), w(`${k}.self_attn.q_proj.bias`));
      const kk = linear(t, x, w(`${k}.self_attn.k_proj.weight`), w(`${k}.self_attn.k_proj.bias`));
      const v = linear(t, x, w(`${k}.self_attn.v_proj.weight`), w(`${k}.self_attn.v_proj.bias`));
      const a = attention(t, q, kk, v, config.num_attention_heads, mask);
      h = ew(t, h, linear(t, a, w(`${k}.self_attn.out_proj.weight`), w(`${k}.self_attn.out_proj.bias`)));
      const y = layerNorm(t, h, w(`${k}.layer_norm2.weight`), w(`${k}.layer_norm2.bias`));
      const m = clipActivation(t, config, linear(t, y, w(`${k}.mlp.fc1.weight`), w(`${k}.mlp.fc1.bias`)));
      h = ew(t, h, linear(t, m, w(`${k}.mlp.fc2.weight`), w(`${k}.mlp.fc2.bias`)));
    }
    const last = layerNorm(t, h, w('text_model.final_layer_norm.weight'), w('text_model.final_layer_norm.bias'));
    t.op([batch, d], [last]);
    return last;
  });
}

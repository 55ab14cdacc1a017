/**
 * CLIP text encoder (transformers' CLIPTextModel), the text conditioning of Stable Diffusion.
 * Weights are addressed by their checkpoint keys (`text_model.encoder.layers.N.…`), in tfjs
 * layout (linear [in, out]).
 *
 * Forward, as CLIPTextTransformer:
 *   h0 = token_embedding[ids] + position_embedding[0..L)
 *   per layer: h += out_proj(causal_self_attention(layer_norm1(h)));  h += fc2(act(fc1(layer_norm2(h))))
 *   last_hidden_state = final_layer_norm(h_N);  pooled = last_hidden_state[b, eos position]
 * No attention mask is applied besides the causal one, as StableDiffusionPipeline.encode_prompt.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import { configObject, FieldReader } from '../config-fields.js';
import { attention, embeddingLookup, gelu, layerNorm, linear, quickGelu } from '../ops.js';
import { param, type ParamShapes, type Params } from '../params.js';
import { gatherRows, rowParts, rowsShape, type RowPart } from '../row-chunks.js';

export type ClipHiddenAct = 'quick_gelu' | 'gelu';

/** transformers' CLIPTextConfig: the fields SD 1.x / 2.x text encoders use. */
export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: ClipHiddenAct;
  layer_norm_eps: number;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  /** Width of CLIPTextModelWithProjection's projection; unused by CLIPTextModel. */
  projection_dim: number;
}

/** Checkpoint entries that are buffers, not weights: pass to loadWeights as `ignore`. */
export const CLIP_TEXT_IGNORED_KEYS = /^text_model\.embeddings\.position_ids$/;

const HIDDEN_ACTS: readonly ClipHiddenAct[] = ['quick_gelu', 'gelu'];

// transformers' CLIPTextConfig defaults, used where config.json omits a field.
const DEFAULTS = {
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu' as ClipHiddenAct,
  layer_norm_eps: 1e-5,
  bos_token_id: 49406,
  eos_token_id: 49407,
  pad_token_id: 1,
  projection_dim: 512,
};

/**
 * Validates a text_encoder/config.json. The size fields are required (a config without them is
 * not a CLIP text config); the rest take transformers' defaults. Every problem is reported at once.
 * A full CLIPConfig (model_type 'clip') is accepted through its `text_config`, as transformers does.
 */
export function parseClipTextConfig(json: unknown, source: string): ClipTextConfig {
  let o = configObject(json, source, "the CLIP text encoder's config.json");
  if (o['model_type'] === 'clip' && typeof o['text_config'] === 'object' && o['text_config'] !== null) {
    o = o['text_config'] as Record<string, unknown>;
  }
  // A field written as null takes its default.
  const r = new FieldReader(o, { nullIsDefault: true });
  const cfg: ClipTextConfig = {
    vocab_size: r.int('vocab_size'),
    hidden_size: r.int('hidden_size'),
    intermediate_size: r.int('intermediate_size'),
    num_hidden_layers: r.int('num_hidden_layers'),
    num_attention_heads: r.int('num_attention_heads'),
    max_position_embeddings: r.int('max_position_embeddings', DEFAULTS.max_position_embeddings),
    hidden_act: r.choice('hidden_act', HIDDEN_ACTS, DEFAULTS.hidden_act),
    layer_norm_eps: r.number('layer_norm_eps', DEFAULTS.layer_norm_eps, { above: 0 }),
    bos_token_id: r.int('bos_token_id', DEFAULTS.bos_token_id, 0),
    eos_token_id: r.int('eos_token_id', DEFAULTS.eos_token_id, 0),
    pad_token_id: r.int('pad_token_id', DEFAULTS.pad_token_id, 0),
    projection_dim: r.int('projection_dim', DEFAULTS.projection_dim),
  };
  if (r.problems.length === 0 && cfg.hidden_size % cfg.num_attention_heads !== 0) {
    r.problem(`"hidden_size" (${cfg.hidden_size}) must be divisible by "num_attention_heads" (${cfg.num_attention_heads})`);
  }
  r.throwIfProblems(`${source}: invalid CLIP text encoder config`);
  return cfg;
}

/** Exact key set of a transformers CLIPTextModel checkpoint (without the position_ids buffer). */
export function clipTextParamShapes(config: ClipTextConfig): ParamShapes {
  const d = config.hidden_size;
  const ff = config.intermediate_size;
  const s: ParamShapes = new Map();
  s.set('text_model.embeddings.token_embedding.weight', [config.vocab_size, d]);
  s.set('text_model.embeddings.position_embedding.weight', [config.max_position_embeddings, d]);
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const p = `text_model.encoder.layers.${i}`;
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      s.set(`${p}.self_attn.${proj}.weight`, [d, d]);
      s.set(`${p}.self_attn.${proj}.bias`, [d]);
    }
    s.set(`${p}.layer_norm1.weight`, [d]);
    s.set(`${p}.layer_norm1.bias`, [d]);
    s.set(`${p}.mlp.fc1.weight`, [d, ff]);
    s.set(`${p}.mlp.fc1.bias`, [ff]);
    s.set(`${p}.mlp.fc2.weight`, [ff, d]);
    s.set(`${p}.mlp.fc2.bias`, [d]);
    s.set(`${p}.layer_norm2.weight`, [d]);
    s.set(`${p}.layer_norm2.bias`, [d]);
  }
  s.set('text_model.final_layer_norm.weight', [d]);
  s.set('text_model.final_layer_norm.bias', [d]);
  return s;
}

export interface ClipTextOptions {
  /**
   * Clip skip: 0 (default) uses the last layer. k > 0 stops after layer N−k, i.e.
   * hidden_states[−(k+1)], and still applies final_layer_norm, as diffusers' encode_prompt
   * does for clip_skip = k. The skipped layers are not computed.
   */
  skipLastLayers?: number;
  /** Replaces the checkpoint's token embedding table [V', D] (e.g. a trainable, grown table). */
  tokenEmbedding?: tf.Tensor;
  /**
   * Rows appended to the table at `offset` (Textual Inversion): ids ≥ offset read `rows`, the
   * others the table (whose rows from `offset` on are shadowed, as when diffusers resizes the
   * table to the grown tokenizer). Avoids building a grown copy of a large table every step.
   */
  extraTokens?: { offset: number; rows: tf.Tensor };
  /** Also return transformers' hidden_states: the embeddings, then the output of every layer run. */
  outputHiddenStates?: boolean;
}

export interface ClipTextOutput {
  /** [B, L, D]: final_layer_norm of the last layer run (the UNet's encoder_hidden_states). */
  lastHiddenState: tf.Tensor3D;
  /** [B, D]: lastHiddenState at each row's EOS position (see eosPositions). */
  pooled: tf.Tensor2D;
  /** Only with outputHiddenStates: [embeddings, layer 1, …] before final_layer_norm. */
  hiddenStates?: tf.Tensor3D[];
}

/**
 * Pooling position per row, as transformers: with the legacy eos_token_id == 2 the first
 * argmax of the ids (EOS has the highest id in CLIP's vocabulary); otherwise the first index
 * whose id equals eos_token_id (0 when there is none, as torch's argmax of all zeros).
 */
export function eosPositions(ids: Int32Array | number[], batch: number, length: number, eosTokenId: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    let pos = 0;
    if (eosTokenId === 2) {
      for (let j = 1; j < length; j++) if (ids[b * length + j]! > ids[b * length + pos]!) pos = j;
    } else {
      for (let j = 0; j < length; j++) {
        if (ids[b * length + j] === eosTokenId) {
          pos = j;
          break;
        }
      }
    }
    out.push(pos);
  }
  return out;
}

function activation(x: tf.Tensor, act: ClipHiddenAct): tf.Tensor {
  switch (act) {
    case 'quick_gelu':
      return quickGelu(x);
    case 'gelu':
      return gelu(x);
  }
}

/** Additive causal mask [1, 1, L, L]: 0 on and below the diagonal, −1e9 above (≈ finfo.min). */
function causalMask(length: number): tf.Tensor {
  const lower = tf.linalg.bandPart(tf.ones([length, length]), -1, 0);
  return tf.mul(tf.sub(1, lower), -1e9).reshape([1, 1, length, length]);
}

function encoderLayer(p: Params, config: ClipTextConfig, i: number, h: tf.Tensor, mask: tf.Tensor): tf.Tensor {
  const k = `text_model.encoder.layers.${i}`;
  const eps = config.layer_norm_eps;
  const x = layerNorm(h, param(p, `${k}.layer_norm1.weight`), param(p, `${k}.layer_norm1.bias`), eps);
  const q = linear(x, param(p, `${k}.self_attn.q_proj.weight`), param(p, `${k}.self_attn.q_proj.bias`));
  const kk = linear(x, param(p, `${k}.self_attn.k_proj.weight`), param(p, `${k}.self_attn.k_proj.bias`));
  const v = linear(x, param(p, `${k}.self_attn.v_proj.weight`), param(p, `${k}.self_attn.v_proj.bias`));
  const a = attention(q, kk, v, config.num_attention_heads, mask);
  h = tf.add(h, linear(a, param(p, `${k}.self_attn.out_proj.weight`), param(p, `${k}.self_attn.out_proj.bias`)));
  const y = layerNorm(h, param(p, `${k}.layer_norm2.weight`), param(p, `${k}.layer_norm2.bias`), eps);
  const m = activation(linear(y, param(p, `${k}.mlp.fc1.weight`), param(p, `${k}.mlp.fc1.bias`)), config.hidden_act);
  return tf.add(h, linear(m, param(p, `${k}.mlp.fc2.weight`), param(p, `${k}.mlp.fc2.bias`)));
}

/** Token embeddings where ids ≥ offset come from extra rows (see ClipTextOptions.extraTokens). */
function lookupWithExtra(table: readonly RowPart[], extra: { offset: number; rows: tf.Tensor }, ids: tf.Tensor2D): tf.Tensor {
  const isExtra = tf.greaterEqual(ids, extra.offset);
  const fromTable = gatherRows(table, tf.minimum(ids, extra.offset - 1));
  const fromExtra = embeddingLookup(extra.rows, tf.maximum(tf.sub(ids, extra.offset), 0));
  const mask = tf.broadcastTo(tf.expandDims(isExtra, -1), fromTable.shape);
  return tf.where(mask, fromExtra, fromTable);
}

/**
 * CLIPTextModel forward on int32 ids [B, L]. Differentiable w.r.t. every weight and the token
 * embedding table (the gather's gradient is a segment sum: only rows of used ids get gradient).
 * When skipLastLayers > 0, pooled is taken from the clip-skipped lastHiddenState.
 */
export function clipTextForward(params: Params, config: ClipTextConfig, inputIds: tf.Tensor2D | readonly (readonly number[])[], opts: ClipTextOptions = {}): ClipTextOutput {
  // Host rows (as the pipeline makes them) need no read-back from the device; a tensor does.
  const hostRows = !(inputIds instanceof tf.Tensor);
  const batch = hostRows ? inputIds.length : inputIds.shape[0];
  const length = hostRows ? (inputIds[0]?.length ?? 0) : inputIds.shape[1];
  if (hostRows && inputIds.some((r) => r.length !== length)) throw new RangeError('clipTextForward: token id rows differ in length');
  const skip = opts.skipLastLayers ?? 0;
  if (!Number.isInteger(skip) || skip < 0 || skip >= config.num_hidden_layers) {
    throw new PainterError(`clip skip must be an integer in [0, ${config.num_hidden_layers - 1}] for this text encoder (got ${skip})`);
  }
  if (length > config.max_position_embeddings) {
    throw new PainterError(`prompt of ${length} tokens is longer than the text encoder's ${config.max_position_embeddings} positions`);
  }
  // The table may be held in row chunks (core/row-chunks.ts) where the device limits one binding.
  const table = opts.tokenEmbedding ? [{ start: 0, tensor: opts.tokenEmbedding }] : rowParts(params, 'text_model.embeddings.token_embedding.weight');
  const [tableRows] = rowsShape(table);
  const extra = opts.extraTokens;
  if (extra && extra.offset > tableRows) throw new Error(`extraTokens offset ${extra.offset} is beyond the table's ${tableRows} rows`);
  const vocab = extra ? extra.offset + extra.rows.shape[0]! : tableRows;
  const ids = hostRows ? Int32Array.from(inputIds.flat()) : (inputIds.dataSync() as Int32Array);
  const bad = ids.findIndex((id) => id < 0 || id >= vocab);
  if (bad >= 0) throw new PainterError(`token id ${ids[bad]} is outside the text encoder's vocabulary of ${vocab}; do tokenizer and text encoder match?`);
  const pos = eosPositions(ids, batch, length, config.eos_token_id);

  return tf.tidy(() => {
    const idTensor = hostRows ? tf.tensor2d(ids, [batch, length], 'int32') : inputIds;
    const positions = param(params, 'text_model.embeddings.position_embedding.weight').slice([0, 0], [length, config.hidden_size]);
    let h = tf.add(extra ? lookupWithExtra(table, extra, idTensor) : gatherRows(table, idTensor), positions);
    const hiddenStates: tf.Tensor3D[] = [h as tf.Tensor3D];
    const mask = causalMask(length);
    for (let i = 0; i < config.num_hidden_layers - skip; i++) {
      h = encoderLayer(params, config, i, h, mask);
      hiddenStates.push(h as tf.Tensor3D);
    }
    const last = layerNorm(h, param(params, 'text_model.final_layer_norm.weight'), param(params, 'text_model.final_layer_norm.bias'), config.layer_norm_eps) as tf.Tensor3D;
    const rows = tf.tensor1d(
      pos.map((p, b) => b * length + p),
      'int32',
    );
    const pooled = tf.gather(last.reshape([batch * length, config.hidden_size]), rows) as tf.Tensor2D;
    const out: ClipTextOutput = { lastHiddenState: last, pooled };
    if (opts.outputHiddenStates) out.hiddenStates = hiddenStates;
    return out as unknown as tf.TensorContainer;
  }) as unknown as ClipTextOutput;
}

/**
 * A token embedding table [V, D] grown to `newRows` rows (Textual Inversion adds tokens).
 * New rows come from `init`: [newRows − V, D] (one vector per new token) or [D] (the same
 * vector for all); without `init` they are the mean of the existing rows. Returns a new tensor;
 * the caller disposes the old table.
 */
export function resizeTokenEmbedding(table: tf.Tensor, newRows: number, init?: tf.Tensor): tf.Tensor2D {
  const [rows, dim] = table.shape as [number, number];
  if (!Number.isInteger(newRows) || newRows < rows) {
    throw new Error(`resizeTokenEmbedding: cannot shrink the table from ${rows} to ${newRows} rows`);
  }
  const added = newRows - rows;
  return tf.tidy(() => {
    if (added === 0) return table.clone() as tf.Tensor2D;
    let extra: tf.Tensor;
    if (!init) extra = tf.broadcastTo(tf.mean(table, 0, true), [added, dim]);
    else if (init.rank === 1 && init.shape[0] === dim) extra = tf.broadcastTo(init.reshape([1, dim]), [added, dim]);
    else if (init.rank === 2 && init.shape[0] === added && init.shape[1] === dim) extra = init;
    else throw new Error(`resizeTokenEmbedding: init has shape [${init.shape.join(', ')}], expected [${added}, ${dim}] or [${dim}]`);
    return tf.concat([table, extra.toFloat()], 0) as tf.Tensor2D;
  });
}

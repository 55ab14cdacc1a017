/**
 * Stage 2 of painter-mini's recipe: its CLIP text encoder, trained on the world's captions alone
 * before the UNet sees it, and then frozen — as Stable Diffusion's UNet is trained against a
 * CLIP text encoder that was trained elsewhere and frozen.
 *
 * Why: trained jointly with the UNet from scratch, the text encoder mapped every object word to
 * nearly one state within 300 steps (relative state difference "red cat" vs "red dog": 0.53 at
 * initialisation, 0.10 at step 300), while the UNet could only use colours yet; after that the
 * object word was never used (swapping it changed the diffusion loss by < 1%).
 *
 * The objective asks the states for every attribute a caption names, the way the UNet reads
 * them: for each attribute a learnt query attends over the caption's token states (the UNet's
 * cross-attention in miniature) and a linear head classifies the pooled state — object, colour,
 * pattern and its colour, background kind and colours, size, position; "not said" is a class of
 * its own for the attributes a caption may leave out.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { MiniConfigs } from './mini-config.js';
import type { PretrainHooks, PretrainSettings, StageSummary } from './pretrain.js';
import { clipEmbeddingScale, DONE_FILE, engineConfig, prefixed, readDone, resumePoint, STAGE_SALT, streamRng, summarise, variablePrefix, variables, writeComponent } from './pretrain-stages.js';
import { BACKGROUND_KINDS, backgroundNoun, caption, COLOUR_NAMES, OBJECT_KINDS, PATTERNS, sampleScene, type Scene } from './world.js';
import { Rng, clipTextForward, clipTextParamShapes, encode, loadWeights, train, trainWithReport, writeBytesAtomic, type ClipTokenizer, type Params } from '../../src/index.js';

/** What the text heads read from a caption; index 0 of the optional ones is "not said". */
export const TEXT_HEADS = {
  object: OBJECT_KINDS,
  colour: COLOUR_NAMES,
  pattern: PATTERNS,
  patternColour: ['not said', ...COLOUR_NAMES],
  background: BACKGROUND_KINDS,
  backgroundColour: COLOUR_NAMES,
  backgroundColour2: ['not said', ...COLOUR_NAMES],
  size: ['not said', 'small', 'large'],
  position: ['not said', 'left', 'centre', 'right'],
} as const;
export type TextHead = keyof typeof TEXT_HEADS;
export const TEXT_HEAD_NAMES = Object.keys(TEXT_HEADS) as TextHead[];

/**
 * The class of every head for a scene and the caption `caption()` wrote for it. The wording
 * tests follow `caption()`: the size, the position and the colour of a pattern may be left out.
 */
export function captionTargets(scene: Scene, text: string): Record<TextHead, number> {
  const s = scene.subject;
  const b = scene.background;
  const words = ` ${text} `;
  // The subject's pattern colour is said in the words before the background's ("… and red striped background" is the background's).
  const subjectWords = ` ${text.slice(0, text.indexOf(backgroundNoun(b)))}`;
  const pc = s.patternColour;
  const patternSaid = pc !== null && new RegExp(` ${pc} (stripes|dots)\\b| and ${pc} (striped|dotted) `).test(subjectWords);
  const size = / (small|little) /.test(words) ? 1 : / (large|big) /.test(words) ? 2 : 0;
  const position = / on the left/.test(words) ? 1 : / in the (middle|centre)/.test(words) ? 2 : / on the right/.test(words) ? 3 : 0;
  return {
    object: OBJECT_KINDS.indexOf(s.object),
    colour: COLOUR_NAMES.indexOf(s.colour),
    pattern: PATTERNS.indexOf(s.pattern),
    patternColour: patternSaid && pc ? 1 + COLOUR_NAMES.indexOf(pc) : 0,
    background: BACKGROUND_KINDS.indexOf(b.kind),
    backgroundColour: COLOUR_NAMES.indexOf(b.colour),
    backgroundColour2: b.kind === 'stripes' ? 1 + COLOUR_NAMES.indexOf(b.colour2 ?? 'white') : 0,
    size,
    position,
  };
}

export interface CaptionBatch {
  ids: number[];
  /** 1 for the caption's tokens (BOS … EOS), 0 for padding. */
  mask: number[];
  targets: Record<TextHead, number[]>;
}

/** `n` world captions (pretraining scenes only), tokenised to `length`, with their head targets. */
export function captionBatch(rng: Rng, n: number, tokenizer: ClipTokenizer, length: number): CaptionBatch {
  const out: CaptionBatch = { ids: [], mask: [], targets: Object.fromEntries(TEXT_HEAD_NAMES.map((h) => [h, [] as number[]])) as Record<TextHead, number[]> };
  for (let i = 0; i < n; i++) {
    const scene = sampleScene(rng);
    const text = caption(scene, rng);
    const enc = encode(tokenizer, text, { maxLength: length, padding: 'max_length', truncation: true });
    out.ids.push(...enc.ids);
    out.mask.push(...enc.attentionMask);
    const t = captionTargets(scene, text);
    for (const h of TEXT_HEAD_NAMES) out.targets[h].push(t[h]);
  }
  return out;
}

/** The heads' weights: per attribute a query [H] and a classifier [H, classes] + bias. */
function headShapes(hidden: number): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const h of TEXT_HEAD_NAMES) {
    shapes.set(`${h}.query`, [hidden]);
    shapes.set(`${h}.weight`, [hidden, TEXT_HEADS[h].length]);
    shapes.set(`${h}.bias`, [TEXT_HEADS[h].length]);
  }
  return shapes;
}

/**
 * Logits of every head from token states [B, L, H]: softmax(states·query/√H) over the caption's
 * tokens pools one state per head, which a linear layer classifies.
 */
export function headLogits(heads: Params, states: tf.Tensor3D, mask: tf.Tensor2D): Record<TextHead, tf.Tensor2D> {
  const hidden = states.shape[2];
  const blocked = tf.mul(tf.sub(1, mask), -1e9);
  const out = {} as Record<TextHead, tf.Tensor2D>;
  for (const h of TEXT_HEAD_NAMES) {
    const q = heads.get(`${h}.query`)!;
    const scores = tf.add(tf.div(tf.squeeze(tf.matMul(states, tf.reshape(q, [1, hidden, 1]).tile([states.shape[0], 1, 1])), [2]), Math.sqrt(hidden)), blocked);
    const weights = tf.softmax(scores as tf.Tensor2D);
    const pooled = tf.squeeze(tf.matMul(tf.expandDims(weights, 1) as tf.Tensor3D, states), [1]) as tf.Tensor2D;
    out[h] = tf.add(tf.matMul(pooled, heads.get(`${h}.weight`)! as tf.Tensor2D), heads.get(`${h}.bias`)!) as tf.Tensor2D;
  }
  return out;
}

/** Mean over heads of the cross-entropy of the heads' logits against `targets`. */
function headLoss(logits: Record<TextHead, tf.Tensor2D>, targets: Record<TextHead, number[]>): tf.Scalar {
  const terms = TEXT_HEAD_NAMES.map((h) => tf.losses.softmaxCrossEntropy(tf.oneHot(targets[h], TEXT_HEADS[h].length), logits[h]));
  return tf.div(tf.addN(terms), terms.length) as tf.Scalar;
}

export interface TextStageSummary extends StageSummary {
  /** Each head's accuracy on captions the stage did not train on. */
  accuracy?: Record<TextHead, number>;
}

/** Accuracy of every head on `n` fresh captions (a stream the training batches never use). */
function headAccuracy(s: PretrainSettings, configs: MiniConfigs, tokenizer: ClipTokenizer, text: Params, heads: Params, n: number): Record<TextHead, number> {
  const L = Math.min(tokenizer.modelMaxLength, configs.textEncoder.max_position_embeddings);
  const b = captionBatch(streamRng(s.seed, STAGE_SALT.scale, 1), n, tokenizer, L);
  return tf.tidy(() => {
    const states = clipTextForward(text, configs.textEncoder, tf.tensor2d(b.ids, [n, L], 'int32')).lastHiddenState as tf.Tensor3D;
    const logits = headLogits(heads, states, tf.tensor2d(b.mask, [n, L]));
    const acc = {} as Record<TextHead, number>;
    for (const h of TEXT_HEAD_NAMES) {
      const pred = logits[h].argMax(1).dataSync();
      acc[h] = b.targets[h].filter((t, i) => pred[i] === t).length / n;
    }
    return acc;
  });
}

/**
 * Trains the text encoder (with its heads, which are then dropped) for `s.textSteps` steps of
 * `s.textBatch` captions; a finished stage is reused. Batch k's captions come from the caption
 * stream (the BPE vocabulary's, index k + 1), so a resumed stage sees the same captions.
 */
export async function trainTextEncoder(s: PretrainSettings, configs: MiniConfigs, tokenizer: ClipTokenizer, hooks: PretrainHooks): Promise<{ params: Params; summary: TextStageSummary }> {
  const dir = path.join(s.runDir, 'text');
  const shapes = clipTextParamShapes(configs.textEncoder);
  const done = readDone(dir) as TextStageSummary | undefined;
  if (done && done.steps >= s.textSteps) {
    hooks.log?.(`stage 2 (text encoder): finished earlier (${done.steps} steps), reusing ${dir}`);
    return { params: loadWeights([path.join(dir, 'text_encoder', 'model.safetensors')], shapes, 'painter-mini text_encoder'), summary: done };
  }
  const prefix = variablePrefix('text');
  const textVars = variables(shapes, s.seed * 8 + 3, `${prefix}_encoder`, clipEmbeddingScale);
  const hidden = configs.textEncoder.hidden_size;
  // initParams: classifiers at N(0, 1/H), queries and biases at N(0, 0.05²) (near-uniform pooling).
  const headVars = variables(headShapes(hidden), s.seed * 8 + 4, `${prefix}_heads`);
  const text: Params = new Map(textVars);
  const heads: Params = new Map(headVars);
  const L = Math.min(tokenizer.modelMaxLength, configs.textEncoder.max_position_embeddings);
  const n = s.textBatch;
  let k = 0;
  const task: Parameters<typeof train>[0] = {
    vars: new Map([...prefixed(textVars, 'text_encoder'), ...prefixed(headVars, 'heads')]),
    prepareBatch() {
      const b = captionBatch(streamRng(s.seed, STAGE_SALT.tokenizer, ++k), n, tokenizer, L);
      return () => {
        const states = clipTextForward(text, configs.textEncoder, tf.tensor2d(b.ids, [n, L], 'int32')).lastHiddenState as tf.Tensor3D;
        return headLoss(headLogits(heads, states, tf.tensor2d(b.mask, [n, L])), b.targets);
      };
    },
    saveState: () => ({ k }),
    restoreState(state) {
      k = (state as { k: number }).k;
    },
    async saveResult(runDir) {
      await writeComponent(path.join(runDir, 'text_encoder'), configs.textEncoder, 'model.safetensors', text);
      return path.join(runDir, 'text_encoder');
    },
  };
  try {
    hooks.log?.(`stage 2 (text encoder): ${s.textSteps} steps of ${n} captions, heads ${TEXT_HEAD_NAMES.join(', ')}`);
    const from = resumePoint(dir, s.resume);
    const result = await trainWithReport(task, engineConfig(s, s.textSteps, s.textLr, 0.01, STAGE_SALT.tokenizer), dir, { stage: 'text', settings: s }, {
      onStep: (r) => hooks.onStep?.('text', r),
      shouldStop: hooks.shouldStop,
      info: hooks.log,
      resumeHint: 'run npm run pretrain:mini again with --resume',
    }, from);
    const accuracy = headAccuracy(s, configs, tokenizer, text, heads, 512);
    hooks.log?.(`stage 2 (text encoder): accuracy on fresh captions ${TEXT_HEAD_NAMES.map((h) => `${h} ${Math.round(accuracy[h] * 100)}%`).join(', ')}`);
    const summary: TextStageSummary = { ...summarise(result.losses), accuracy };
    await writeBytesAtomic(path.join(dir, DONE_FILE), JSON.stringify(summary));
    return { params: new Map([...textVars].map(([key, v]) => [key, tf.clone(v)])), summary };
  } finally {
    for (const v of [...textVars.values(), ...headVars.values()]) v.dispose();
  }
}

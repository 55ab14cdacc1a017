/**
 * Textual Inversion (Gal et al. 2022): learn the embedding v* of a new placeholder word S* so
 * that prompts like "a photo of S*" reconstruct the training images:
 * v* = argmin_v E ‖ε − ε_θ(z_t, t, c_θ(y(S*)))‖², with the text encoder and UNet frozen.
 * Only the new rows train; they sit beside the frozen table (ClipTextOptions.extraTokens).
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import { clipTextForward } from '../core/models/clip-text.js';
import { vaeEncode } from '../core/models/vae.js';
import { promptIds } from '../core/pipeline/text-to-image.js';
import { Rng } from '../core/random.js';
import { noiseSchedule, type NoiseSchedule, type PredictionType } from '../core/schedulers/index.js';
import { addTokens, tokenId, tokenize, vocabSize } from '../core/tokenizer/clip-tokenizer.js';
import { addOffsetNoise } from '../core/training/noise.js';
import { diffusionLoss } from '../core/training/loss.js';
import { PainterError } from '../errors.js';
import { writeEmbeddingFile } from '../io/embeddings.js';
import { multiVectorTokens } from '../core/embeddings.js';
import { cropToTensorData, centreCrop, type SourceImage } from '../io/dataset.js';
import type { MethodSettings, TrainingTask } from './engine.js';
import { renderValidationGrid } from './validation.js';
import * as path from 'node:path';

/** Prompt templates of the Textual Inversion paper (as diffusers' example script uses them). */
export const OBJECT_TEMPLATES = [
  'a photo of a {}', 'a rendering of a {}', 'a cropped photo of the {}', 'the photo of a {}', 'a photo of a clean {}',
  'a photo of a dirty {}', 'a dark photo of the {}', 'a photo of my {}', 'a photo of the cool {}', 'a close-up photo of a {}',
  'a bright photo of the {}', 'a cropped photo of a {}', 'a photo of the {}', 'a good photo of the {}', 'a photo of one {}',
  'a close-up photo of the {}', 'a rendition of the {}', 'a photo of the clean {}', 'a rendition of a {}', 'a photo of a nice {}',
  'a good photo of a {}', 'a photo of the nice {}', 'a photo of the small {}', 'a photo of the weird {}', 'a photo of the large {}',
  'a photo of a cool {}', 'a photo of a small {}',
];

export const STYLE_TEMPLATES = [
  'a painting in the style of {}', 'a rendering in the style of {}', 'a cropped painting in the style of {}',
  'the painting in the style of {}', 'a clean painting in the style of {}', 'a dirty painting in the style of {}',
  'a dark painting in the style of {}', 'a picture in the style of {}', 'a cool painting in the style of {}',
  'a close-up painting in the style of {}', 'a bright painting in the style of {}', 'a good painting in the style of {}',
  'a rendition in the style of {}', 'a nice painting in the style of {}', 'a small painting in the style of {}',
  'a weird painting in the style of {}', 'a large painting in the style of {}',
];

export interface InvertSettings extends MethodSettings {
  token: string;
  initToken?: string;
  vectors: number;
  mode: 'object' | 'style';
  format: 'diffusers' | 'a1111';
}

/** A cached training view: the VAE posterior of one crop (and mirror) of one image. */
interface View {
  image: number;
  mean: tf.Tensor4D;
  std: tf.Tensor4D;
}

const RANDOM_CROPS_PER_IMAGE = 4;

/**
 * Encodes every view of every image once (centre crop, or a few seeded random crops; each also
 * mirrored when flipping is on) and keeps the posterior mean and std.
 */
export function encodeViews(model: StableDiffusion, images: SourceImage[], resolution: number, centerCrop: boolean, flip: boolean, seed: number): View[] {
  const rng = new Rng(seed + 0x5eed);
  const views: View[] = [];
  images.forEach((img, index) => {
    const crops = centerCrop
      ? [centreCrop(img, resolution)]
      : Array.from({ length: RANDOM_CROPS_PER_IMAGE }, () => ({ left: rng.int(img.width - resolution + 1), top: rng.int(img.height - resolution + 1) }));
    for (const c of crops) {
      for (const mirrored of flip ? [false, true] : [false]) {
        const data = cropToTensorData(img, resolution, c.left, c.top, mirrored);
        const post = tf.tidy(() => {
          const p = vaeEncode(model.vae.params, model.vae.config, tf.tensor4d(data, [1, resolution, resolution, 3]));
          return { mean: p.mean, std: p.std };
        });
        views.push({ image: index, mean: tf.keep(post.mean), std: tf.keep(post.std) });
      }
    }
  });
  return views;
}

export interface InversionSetup {
  task: TrainingTask;
  tokens: string[];
  ids: number[];
  /** The trainable rows [vectors, dim]. */
  rows: tf.Variable;
  offset: number;
  dispose(): void;
}

function checkPlaceholder(model: StableDiffusion, token: string, vectors: number): string[] {
  if (!token || /\s/.test(token)) throw new PainterError(`--token "${token}": give one word without spaces, e.g. "<cat>"`);
  const tokens = multiVectorTokens(token, vectors);
  for (const t of tokens) {
    if (tokenId(model.tokenizer, t) !== undefined) {
      throw new PainterError(`--token "${t}" already exists in the model's vocabulary; choose a new placeholder such as "<my-${token.replace(/[<>]/g, '')}>"`);
    }
  }
  return tokens;
}

function initVector(model: StableDiffusion, initToken: string | undefined, table: tf.Tensor, offset: number): tf.Tensor1D {
  if (initToken === undefined) {
    // No initializer: the mean embedding of the vocabulary, a neutral starting point.
    return tf.tidy(() => tf.mean(table.slice([0, 0], [offset, -1]), 0) as tf.Tensor1D);
  }
  const pieces = tokenize(model.tokenizer, initToken);
  if (pieces.length !== 1) {
    throw new PainterError(`--init-token "${initToken}" is ${pieces.length} tokens (${pieces.join(' ')}), not one; choose a single common word such as "cat" or "painting"`);
  }
  const id = tokenId(model.tokenizer, pieces[0]!);
  if (id === undefined || id >= offset) throw new PainterError(`--init-token "${initToken}" is not in the model's vocabulary`);
  return tf.tidy(() => table.slice([id, 0], [1, -1]).reshape([-1]) as tf.Tensor1D);
}

const TEMPLATE_SLOT = '{}';

/**
 * One training prompt: the template with the placeholder token, followed by the image's caption
 * when it has one, as AUTOMATIC1111's "[name], [filewords]" templates do. A caption that names
 * what is not the subject (its background, its pose) leaves the token only the subject to learn.
 */
export function inversionPrompt(template: string, token: string, caption?: string): string {
  return withCaption(template.replace(TEMPLATE_SLOT, token), caption);
}

/** A training prompt followed by the image's caption file, if any: "a photo of sks dog, on a beach". */
export function withCaption(prompt: string, caption?: string): string {
  return caption ? `${prompt}, ${caption}` : prompt;
}

export function createInversion(model: StableDiffusion, images: SourceImage[], s: InvertSettings): InversionSetup {
  const tokens = checkPlaceholder(model, s.token, s.vectors);
  const table = model.textEncoder.params.get('text_model.embeddings.token_embedding.weight')!;
  const init = initVector(model, s.initToken, table, Math.min(table.shape[0]!, vocabSize(model.tokenizer)));
  const ids = addTokens(model.tokenizer, tokens);
  const offset = ids[0]!;
  if (offset > table.shape[0]!) throw new PainterError(`the tokenizer has ${offset} tokens but the text encoder only ${table.shape[0]} embeddings; they do not belong together`);
  const rows = tf.variable(tf.tidy(() => tf.tile(init.reshape([1, -1]), [s.vectors, 1])), true, `ti_rows_${Date.now()}_${Math.random()}`);
  init.dispose();
  const extraTokens = { offset, rows };
  const views = encodeViews(model, images, s.resolution, s.centerCrop, s.flip, s.seed);
  const templates = s.mode === 'style' ? STYLE_TEMPLATES : OBJECT_TEMPLATES;
  const schedule: NoiseSchedule = noiseSchedule(model.scheduler);
  const predictionType = model.scheduler.prediction_type as PredictionType;
  const T = model.scheduler.num_train_timesteps;
  const sf = model.vae.config.scaling_factor;
  const [, lh, lw, lc] = views[0]!.mean.shape;
  const perLatent = lh * lw * lc;
  // Epoch-style order over images, saved in checkpoints so a resumed run continues it.
  let order: number[] = [];
  let pos = 0;

  const task: TrainingTask = {
    vars: new Map([['embeddings', rows]]),
    prepareBatch(rng: Rng) {
      const picks: View[] = [];
      const prompts: string[] = [];
      for (let b = 0; b < s.batch; b++) {
        if (pos >= order.length) {
          order = rng.shuffle(images.map((_, i) => i));
          pos = 0;
        }
        const image = order[pos++]!;
        const candidates = views.filter((v) => v.image === image);
        picks.push(candidates[rng.int(candidates.length)]!);
        const template = templates[rng.int(templates.length)]!;
        // Multi-vector tokens are expanded by promptIds, as diffusers' maybe_convert_prompt does.
        prompts.push(inversionPrompt(template, s.token, images[image]!.caption));
      }
      const timesteps = picks.map(() => rng.int(T));
      const posterior = rng.normals(s.batch * perLatent);
      const noise = rng.normals(s.batch * perLatent);
      addOffsetNoise(noise, s.batch, lh * lw, lc, s.noiseOffset, rng);
      return () => {
        const mean = tf.concat(picks.map((v) => v.mean), 0) as tf.Tensor4D;
        const std = tf.concat(picks.map((v) => v.std), 0) as tf.Tensor4D;
        // z₀ = (μ + σ·n)·scaling_factor: a fresh posterior sample each step, as diffusers does.
        const latents = tf.mul(tf.add(mean, tf.mul(std, tf.tensor4d(posterior, mean.shape))), sf) as tf.Tensor4D;
        const ids = promptIds(model, prompts);
        const ehs = clipTextForward(model.textEncoder.params, model.textEncoder.config, ids, { extraTokens }).lastHiddenState;
        return diffusionLoss(model.unet, schedule, { latents, noise: tf.tensor4d(noise, latents.shape), timesteps, encoderHiddenStates: ehs }, { predictionType, minSnrGamma: s.minSnrGamma });
      };
    },
    saveState: () => ({ order, pos }),
    restoreState(state) {
      const st = state as { order: number[]; pos: number };
      order = st.order;
      pos = st.pos;
    },
    validate: (step) => renderValidationGrid(model, s.validationPrompt, s.seed, { extraTokens }, step),
    async saveResult(runDir, step) {
      const file = path.join(runDir, embeddingFileName(s.token));
      await writeEmbeddingFile(file, s.token, rows, {
        format: s.format,
        metadata: {
          'painter.base_model_hash': s.baseModelHash,
          'painter.steps': String(step),
          'painter.init_token': s.initToken ?? '',
          'painter.vectors': String(s.vectors),
        },
      });
      return file;
    },
  };
  return {
    task,
    tokens,
    ids,
    rows,
    offset,
    dispose() {
      for (const v of views) tf.dispose([v.mean, v.std]);
      rows.dispose();
    },
  };
}

/** "<cat>" → "cat.safetensors" (a name every file system and tool accepts). */
export function embeddingFileName(token: string): string {
  const stem = token.replace(/[<>]/g, '').replace(/[^\w.-]+/g, '_') || 'embedding';
  return `${stem}.safetensors`;
}

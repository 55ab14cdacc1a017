/**
 * Textual Inversion (Gal et al. 2022): learn the embedding v* of a new placeholder word S* so
 * that prompts like "a photo of S*" reconstruct the training images:
 * v* = argmin_v E ‖ε − ε_θ(z_t, t, c_θ(y(S*)))‖², with the text encoder and UNet frozen.
 * Only the new rows train; they sit beside the frozen table (ClipTextOptions.extraTokens).
 */
import * as tf from '@tensorflow/tfjs';
import { releaseComponent, type StableDiffusion } from '../core/model.js';
import { clipTextForward } from '../core/models/clip-text.js';
import { promptIdRows } from '../core/pipeline/text-to-image.js';
import type { Rng } from '../core/random.js';
import { noiseSchedule, type NoiseSchedule, type PredictionType } from '../core/schedulers/index.js';
import { addTokens, tokenId, tokenize, vocabSize } from '../core/tokenizer/clip-tokenizer.js';
import { diffusionLoss } from '../core/training/loss.js';
import { PainterError, UsageError } from '../errors.js';
import { embeddingFileName } from '../io/embedding-library.js';
import { writeEmbeddingFile } from '../io/embeddings.js';
import { multiVectorTokens, TOKEN_EMBEDDING_KEY } from '../core/embeddings.js';
import { meanRows, rowParts, rowsShape, sliceRows, type RowPart } from '../core/row-chunks.js';
import type { SourceImage } from '../io/dataset.js';
import { variantName, type MethodSettings, type TrainingTask } from './engine.js';
import { disposeViews, drawNoise, encodeViews, ImageBatcher, latentShape, pickView, positionWeights, sampleLatents, withCaption, type View } from './steps.js';
import { PLAIN_CAPTIONS, trainingPrompt } from './captions.js';
import { disposeHeldOut, heldOutLoss, heldOutSet } from './validation-loss.js';
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
  /**
   * Several tokens in one run (a concept dataset): each concept's token, indexed by
   * SourceImage.concept, so each image trains its own concept's token. The tokens learnt are
   * these, each once (in order of first appearance); `token` and `initToken` are then unused.
   */
  conceptTokens?: readonly { token: string; initToken?: string }[];
}

export interface InversionSetup {
  task: TrainingTask;
  /** The placeholders learnt, one embedding file each (the run's token, or each concept's). */
  placeholders: string[];
  /** The tokenizer tokens they expand to (several per placeholder for multi-vector embeddings). */
  tokens: string[];
  ids: number[];
  /** The trainable rows [vectors, dim], placeholder after placeholder. */
  rows: tf.Variable;
  offset: number;
  dispose(): void;
}

export function checkPlaceholder(model: StableDiffusion, token: string, vectors: number): string[] {
  if (!token || /\s/.test(token)) throw new UsageError(`--token "${token}": give one word without spaces, e.g. "<cat>"`);
  const tokens = multiVectorTokens(token, vectors);
  for (const t of tokens) {
    if (tokenId(model.tokenizer, t) !== undefined) {
      throw new PainterError(`--token "${t}" already exists in the model's vocabulary; choose a new placeholder such as "<my-${token.replace(/[<>]/g, '')}>"`);
    }
  }
  return tokens;
}

export function initVector(model: StableDiffusion, initToken: string | undefined, table: readonly RowPart[], offset: number): tf.Tensor1D {
  // No initializer: the mean embedding of the vocabulary, a neutral starting point.
  if (initToken === undefined) return meanRows(table, offset);
  const pieces = tokenize(model.tokenizer, initToken);
  if (pieces.length !== 1) {
    throw new PainterError(`--init-token "${initToken}" is ${pieces.length} tokens (${pieces.join(' ')}), not one; choose a single common word such as "cat" or "painting"`);
  }
  const id = tokenId(model.tokenizer, pieces[0]!);
  if (id === undefined || id >= offset) throw new PainterError(`--init-token "${initToken}" is not in the model's vocabulary`);
  return tf.tidy(() => sliceRows(table, id, 1).reshape([-1]) as tf.Tensor1D);
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

/** `heldOut`: images kept out of training for the validation loss (validation-loss.ts). */
export function createInversion(model: StableDiffusion, images: SourceImage[], s: InvertSettings, heldOut: readonly SourceImage[] = []): InversionSetup {
  const learnt = s.conceptTokens ? s.conceptTokens.filter((c, i, all) => all.findIndex((o) => o.token === c.token) === i) : [{ token: s.token, initToken: s.initToken }];
  // Each image's token: its concept's, or the run's one.
  const tokenOf = (img: SourceImage): string => (s.conceptTokens ? s.conceptTokens[img.concept ?? 0]!.token : s.token);
  const tokens = learnt.flatMap((l) => checkPlaceholder(model, l.token, s.vectors));
  const table = rowParts(model.textEncoder.params, TOKEN_EMBEDDING_KEY);
  const [tableRows] = rowsShape(table);
  const inits = learnt.map((l) => initVector(model, l.initToken, table, Math.min(tableRows, vocabSize(model.tokenizer))));
  // All placeholders' tokens are added at once: their rows are contiguous, one trainable block.
  const ids = addTokens(model.tokenizer, tokens);
  const offset = ids[0]!;
  if (offset > tableRows) throw new PainterError(`the tokenizer has ${offset} tokens but the text encoder only ${tableRows} embeddings; they do not belong together`);
  const rows = tf.variable(tf.tidy(() => tf.concat(inits.map((init) => tf.tile(init.reshape([1, -1]), [s.vectors, 1])), 0)), true, `ti_rows_${Date.now()}_${Math.random()}`);
  tf.dispose(inits);
  const extraTokens = { offset, rows };
  const views = encodeViews(model, images, s.resolution, s.centerCrop, s.flip, s.seed);
  const templates = s.mode === 'style' ? STYLE_TEMPLATES : OBJECT_TEMPLATES;
  // Held-out images are prompted with the first template, as the paper's "a photo of S*".
  const validation = heldOut.length > 0 ? heldOutSet(model, heldOut, heldOut.map((img) => inversionPrompt(templates[0]!, tokenOf(img), img.caption)), s.resolution, s.seed) : undefined;
  // The images are cached as latents: without validation grids the VAE is not needed again.
  if (s.releaseUnused) releaseComponent(model, 'vae');
  const schedule: NoiseSchedule = noiseSchedule(model.scheduler);
  const predictionType = model.scheduler.prediction_type as PredictionType;
  const T = model.scheduler.num_train_timesteps;
  const sf = model.vae.config.scaling_factor;
  // Epoch-style order over images (bucket by bucket with buckets), saved in checkpoints so a resumed run continues it.
  const sampler = new ImageBatcher(images, s.batch);
  // Only the text side trains: checkpointed UNet blocks differentiate w.r.t. their inputs alone.
  const checkpoint = s.gradientCheckpointing ? { weights: () => false } : undefined;

  const task: TrainingTask = {
    vars: new Map([['embeddings', rows]]),
    prepareBatch(rng: Rng) {
      const picks: View[] = [];
      const prompts: string[] = [];
      sampler.draw(rng, (image) => {
        picks.push(pickView(views, image, rng));
        const template = templates[rng.int(templates.length)]!;
        // Multi-vector tokens are expanded by promptIds, as diffusers' maybe_convert_prompt does.
        prompts.push(trainingPrompt(template.replace(TEMPLATE_SLOT, tokenOf(images[image]!)), images[image]!.caption, s.captions ?? PLAIN_CAPTIONS, rng));
      });
      const draw = drawNoise(rng, picks.length, latentShape(picks), T, s.noiseOffset);
      return () => {
        const latents = sampleLatents(picks, draw.posterior, sf);
        const ehs = clipTextForward(model.textEncoder.params, model.textEncoder.config, promptIdRows(model, prompts), { extraTokens }).lastHiddenState;
        const input = { latents, noise: tf.tensor4d(draw.noise, latents.shape), timesteps: draw.timesteps, encoderHiddenStates: ehs, positionWeights: positionWeights(picks) };
        return diffusionLoss(model.unet, schedule, input, { predictionType, minSnrGamma: s.minSnrGamma, checkpoint });
      };
    },
    saveState: () => sampler.state(),
    restoreState: (state) => sampler.restore(state),
    validate: (step) => renderValidationGrid(model, s.validationPrompt, s.seed, { extraTokens }, step),
    ...(validation && {
      validationLoss: () =>
        heldOutLoss(model, validation, () => model.unet, (prompts) => clipTextForward(model.textEncoder.params, model.textEncoder.config, promptIdRows(model, prompts), { extraTokens }).lastHiddenState),
    }),
    async saveResult(runDir, step, variant) {
      const files = learnt.map((l) => path.join(runDir, variantName(embeddingFileName(l.token), variant)));
      // Several placeholders: each file holds its own block of rows.
      const all = learnt.length > 1 ? ((await rows.data()) as Float32Array) : undefined;
      const size = rows.shape[1]! * s.vectors;
      for (const [j, l] of learnt.entries()) {
        const vectors = all ? { data: all.slice(j * size, (j + 1) * size), shape: [s.vectors, rows.shape[1]!] } : rows;
        await writeEmbeddingFile(files[j]!, l.token, vectors, {
          format: s.format,
          metadata: {
            'painter.base_model_hash': s.baseModelHash,
            'painter.steps': String(step),
            'painter.init_token': l.initToken ?? '',
            'painter.vectors': String(s.vectors),
          },
        });
      }
      return files[0]!;
    },
  };
  return {
    task,
    placeholders: learnt.map((l) => l.token),
    tokens,
    ids,
    rows,
    offset,
    dispose() {
      disposeViews(views);
      disposeHeldOut(validation);
      rows.dispose();
    },
  };
}


/**
 * Validation samples during training: a 2×2 grid for the validation prompt with fixed seeds,
 * so grids from successive steps show what the run has learned.
 */
import type * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import { sampleImages } from '../core/pipeline/generate.js';
import { modelImageSize } from '../core/sizes.js';
import { VALIDATION_BATCH, VALIDATION_IMAGES, VALIDATION_STEPS } from '../core/training/constants.js';
import { imageGrid } from '../io/image-grid.js';

export async function renderValidationGrid(
  model: StableDiffusion,
  prompt: string,
  seed: number,
  text: { extraTokens?: { offset: number; rows: tf.Tensor }; tokenEmbedding?: tf.Tensor },
  _step: number,
): Promise<Buffer> {
  const size = modelImageSize(model);
  const tiles: Uint8Array[] = [];
  for await (const event of sampleImages(model, {
    prompt,
    negativePrompt: '',
    steps: VALIDATION_STEPS,
    guidance: 7.5,
    scheduler: 'dpm++2m',
    seed,
    count: VALIDATION_IMAGES,
    batch: VALIDATION_BATCH,
    width: size,
    height: size,
    clipSkip: 0,
    ...text,
  })) {
    if (event.kind === 'image') tiles.push(event.image.pixels);
  }
  return imageGrid(tiles, size, size, 2);
}

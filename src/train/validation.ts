/**
 * Validation samples during training: a 2×2 grid for the validation prompt with fixed seeds,
 * so grids from successive steps show what the run has learned.
 */
import type * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import type { StableDiffusion } from '../core/model.js';
import { defaultImageSize, generate } from '../core/pipeline/generate.js';

export const VALIDATION_IMAGES = 4;
export const VALIDATION_STEPS = 20;

export async function renderValidationGrid(
  model: StableDiffusion,
  prompt: string,
  seed: number,
  text: { extraTokens?: { offset: number; rows: tf.Tensor }; tokenEmbedding?: tf.Tensor },
  _step: number,
): Promise<Buffer> {
  const size = defaultImageSize(model);
  const tiles: Buffer[] = [];
  for (const event of generate(model, {
    prompt,
    negativePrompt: '',
    steps: VALIDATION_STEPS,
    guidance: 7.5,
    scheduler: 'dpm++2m',
    seed,
    count: VALIDATION_IMAGES,
    batch: 2,
    width: size,
    height: size,
    clipSkip: 0,
    ...text,
  })) {
    if (event.kind === 'image') tiles.push(Buffer.from(event.image.pixels));
  }
  const cols = 2;
  const rows = Math.ceil(tiles.length / cols);
  return sharp({ create: { width: cols * size, height: rows * size, channels: 3, background: '#000' } })
    .composite(tiles.map((t, i) => ({ input: t, raw: { width: size, height: size, channels: 3 as const }, left: (i % cols) * size, top: Math.floor(i / cols) * size })))
    .png()
    .toBuffer();
}

/**
 * The sizes a Stable Diffusion model implies, described once: its native image size, the latent
 * grid of an image size, and the prompt length the text encoder reads. The pipeline, training,
 * the memory estimate and the bench all take them from here.
 */
import type { StableDiffusion } from './model.js';
import type { ClipTextConfig } from './models/clip-text.js';
import type { UNetConfig } from './models/unet.js';
import { vaeLatentFactor, type VaeConfig } from './models/vae.js';

/** CLIP's context length: SD tokenizers' model_max_length. */
export const CLIP_CONTEXT_LENGTH = 77;

/** The model's native image size: the UNet's sample_size times the VAE's latent factor. */
export function defaultImageSize(unet: UNetConfig, vae: VaeConfig): number {
  return (unet.sample_size ?? 64) * vaeLatentFactor(vae);
}

/** Latent grid of an image size; throws a RangeError for sizes the VAE cannot take. */
export function latentGrid(unet: UNetConfig, vae: VaeConfig, width: number, height: number): { h: number; w: number; c: number; factor: number } {
  const factor = vaeLatentFactor(vae);
  if (width % factor !== 0 || height % factor !== 0 || width <= 0 || height <= 0) {
    throw new RangeError(`size ${width}x${height} is not a multiple of the model's latent factor ${factor}`);
  }
  return { h: height / factor, w: width / factor, c: unet.in_channels, factor };
}

/** Tokens per prompt the pipeline feeds the text encoder (the tokenizer's limit within the encoder's positions). */
export function promptLength(textEncoder: ClipTextConfig, tokenizerMaxLength = CLIP_CONTEXT_LENGTH): number {
  return Math.min(tokenizerMaxLength, textEncoder.max_position_embeddings);
}

/** A loaded model's native image size. */
export function modelImageSize(model: StableDiffusion): number {
  return defaultImageSize(model.unet.config, model.vae.config);
}

/** A loaded model's latent grid for an image size (a RangeError for sizes it cannot take). */
export function modelLatentGrid(model: StableDiffusion, width: number, height: number): { h: number; w: number; c: number; factor: number } {
  return latentGrid(model.unet.config, model.vae.config, width, height);
}

/** A loaded model's prompt length (its tokenizer's limit within its text encoder's positions). */
export function modelPromptLength(model: StableDiffusion): number {
  return promptLength(model.textEncoder.config, model.tokenizer.modelMaxLength);
}

/**
 * The steps every training method takes on its data, shared by Textual Inversion and DreamBooth:
 * cached training views (the VAE posterior of each crop and mirror of each image), epoch-style
 * sampling of images, one step's random draws (timesteps, posterior sample, noise with optional
 * offset noise) and the latents z₀ = (μ + σ·n)·scaling_factor of a drawn batch.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import { vaeEncode } from '../core/models/vae.js';
import { Rng } from '../core/random.js';
import { BucketBatchSampler, groupByBucket, type BatchSamplerState } from '../core/training/buckets.js';
import { RANDOM_CROPS_PER_IMAGE } from '../core/training/constants.js';
import { addOffsetNoise } from '../core/training/noise.js';
import { centreCrop, cropSize, cropToTensorData, type SourceImage } from '../io/dataset.js';

/** A cached training view: the VAE posterior of one crop (and mirror) of one image. */
export interface View {
  image: number;
  mean: tf.Tensor4D;
  std: tf.Tensor4D;
  /** The image's loss mask over this crop at latent resolution, [1, h, w, 1] in [0, 1] (masked loss). */
  weights?: tf.Tensor4D;
}

/**
 * A mask's square crop (mirrored with its photo) averaged over each latent cell: the area
 * interpolation kohya's masked loss brings a mask to the latents' size with. Values in [0, 1].
 */
export function maskCropToLatent(img: SourceImage, resolution: number, left: number, top: number, flip: boolean, h: number, w: number): Float32Array {
  const mask = img.mask!;
  const [cw, ch] = cropSize(img, resolution);
  const fy = ch / h;
  const fx = cw / w;
  const out = new Float32Array(h * w);
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      const sx = flip ? left + cw - 1 - x : left + x;
      out[Math.floor(y / fy) * w + Math.floor(x / fx)]! += mask[(top + y) * img.width + sx]! / 255;
    }
  }
  return out.map((v) => v / (fx * fy));
}

/**
 * Encodes every view of every image once (centre crop, or a few seeded random crops; each also
 * mirrored when flipping is on) and keeps the posterior mean and std.
 */
export function encodeViews(model: StableDiffusion, images: SourceImage[], resolution: number, centerCrop: boolean, flip: boolean, seed: number): View[] {
  const rng = new Rng(seed + 0x5eed);
  const views: View[] = [];
  images.forEach((img, index) => {
    const [cw, ch] = cropSize(img, resolution);
    const crops = centerCrop
      ? [centreCrop(img, resolution)]
      : Array.from({ length: RANDOM_CROPS_PER_IMAGE }, () => ({ left: rng.int(img.width - cw + 1), top: rng.int(img.height - ch + 1) }));
    for (const c of crops) {
      for (const mirrored of flip ? [false, true] : [false]) {
        const data = cropToTensorData(img, resolution, c.left, c.top, mirrored);
        const post = tf.tidy(() => {
          const p = vaeEncode(model.vae.params, model.vae.config, tf.tensor4d(data, [1, ch, cw, 3]));
          return { mean: p.mean, std: p.std };
        });
        const [, h, w] = post.mean.shape;
        const weights = img.mask ? tf.tensor4d(maskCropToLatent(img, resolution, c.left, c.top, mirrored, h, w), [1, h, w, 1]) : undefined;
        views.push({ image: index, mean: tf.keep(post.mean), std: tf.keep(post.std), ...(weights ? { weights } : {}) });
      }
    }
  });
  return views;
}

export function disposeViews(views: readonly View[]): void {
  for (const v of views) tf.dispose([v.mean, v.std, ...(v.weights ? [v.weights] : [])]);
}

/**
 * The loss weights of a drawn batch's rows, [B, h, w, 1]: each view's mask, ones for views
 * without one; undefined when no view has a mask (the plain loss).
 */
export function positionWeights(views: readonly View[]): tf.Tensor4D | undefined {
  if (!views.some((v) => v.weights)) return undefined;
  return tf.tidy(() => {
    const [, h, w] = views[0]!.mean.shape;
    return tf.concat(views.map((v) => v.weights ?? tf.ones([1, h, w, 1])), 0) as tf.Tensor4D;
  });
}

/** One of an image's views, chosen at random. */
export function pickView(views: readonly View[], image: number, rng: Rng): View {
  const candidates = views.filter((v) => v.image === image);
  return candidates[rng.int(candidates.length)]!;
}

export interface SamplerState {
  order: number[];
  pos: number;
}

/** Each image index as often as it repeats (kohya's num_repeats), in index order: the entries of one epoch. */
export function repeatedIndices(n: number, repeats?: readonly number[]): number[] {
  return Array.from({ length: n }, (_, i) => Array<number>(repeats?.[i] ?? 1).fill(i)).flat();
}

/**
 * Epoch-style sampling: every image once per epoch (`repeats[i]` times with repeats), in a fresh
 * shuffled order; its state survives a resume.
 */
export class EpochSampler {
  private order: number[] = [];
  private pos = 0;
  private readonly entries: number[];
  constructor(n: number, repeats?: readonly number[]) {
    this.entries = repeatedIndices(n, repeats);
  }
  next(rng: Rng): number {
    if (this.pos >= this.order.length) {
      this.order = rng.shuffle(this.entries);
      this.pos = 0;
    }
    return this.order[this.pos++]!;
  }
  state(): SamplerState {
    return { order: this.order, pos: this.pos };
  }
  restore(s: SamplerState): void {
    this.order = s.order;
    this.pos = s.pos;
  }
}

/**
 * Which images a step trains on. Without buckets: `batch` images in epoch order, each drawn just
 * before the caller's own draws for it (the order runs have always drawn in). With buckets
 * (some image has one): a whole batch from one bucket (BucketBatchSampler), so its latents share
 * a shape; it may be smaller than `batch` at the end of a bucket. An image with `repeats` N
 * appears N times per epoch, in its bucket too (kohya's num_repeats).
 */
export class ImageBatcher {
  private readonly epoch: EpochSampler;
  private readonly buckets?: BucketBatchSampler;
  constructor(
    images: readonly SourceImage[],
    private readonly batch: number,
  ) {
    const repeats = images.map((i) => i.repeats ?? 1);
    this.epoch = new EpochSampler(images.length, repeats);
    if (images.some((i) => i.bucket)) this.buckets = new BucketBatchSampler(groupByBucket(images.map((i) => i.bucket)).map((g) => g.images.flatMap((i) => Array<number>(repeats[i]!).fill(i))), batch);
  }
  /** Calls `each` with every image of the next batch, in order. */
  draw(rng: Rng, each: (image: number) => void): void {
    if (this.buckets) {
      for (const image of this.buckets.next(rng)) each(image);
      return;
    }
    for (let b = 0; b < this.batch; b++) each(this.epoch.next(rng));
  }
  state(): SamplerState | BatchSamplerState {
    return this.buckets ? this.buckets.state() : this.epoch.state();
  }
  restore(s: unknown): void {
    if (this.buckets) this.buckets.restore(s as BatchSamplerState);
    else this.epoch.restore(s as SamplerState);
  }
}

/** The latent shape [h, w, C] of a drawn batch (its views share it). */
export function latentShape(views: readonly View[]): [number, number, number] {
  const [, h, w, c] = views[0]!.mean.shape;
  return [h, w, c];
}

/** One step's random draws for `rows` latents (made outside the gradient tape). */
export interface NoiseDraw {
  timesteps: number[];
  /** n of the posterior sample z₀ = μ + σ·n, NHWC row-major. */
  posterior: Float32Array;
  /** ε, NHWC row-major, with offset noise added. */
  noise: Float32Array;
}

/**
 * Draws, in this order, a timestep per row, the posterior sample's n, then ε and its offset noise
 * (the order is part of a run's reproducibility: resumed runs replay it).
 */
export function drawNoise(rng: Rng, rows: number, latent: readonly [number, number, number], trainTimesteps: number, noiseOffset: number): NoiseDraw {
  const [h, w, c] = latent;
  const timesteps = Array.from({ length: rows }, () => rng.int(trainTimesteps));
  const posterior = rng.normals(rows * h * w * c);
  const noise = rng.normals(rows * h * w * c);
  addOffsetNoise(noise, rows, h * w, c, noiseOffset, rng);
  return { timesteps, posterior, noise };
}

/** z₀ = (μ + σ·n)·scaling_factor of the views: a fresh posterior sample each step, as diffusers does. */
export function sampleLatents(views: readonly View[], posterior: Float32Array, scalingFactor: number): tf.Tensor4D {
  return tf.tidy(() => {
    const mean = tf.concat(views.map((v) => v.mean), 0) as tf.Tensor4D;
    const std = tf.concat(views.map((v) => v.std), 0) as tf.Tensor4D;
    return tf.mul(tf.add(mean, tf.mul(std, tf.tensor4d(posterior, mean.shape))), scalingFactor) as tf.Tensor4D;
  });
}

/** A training prompt followed by the image's caption file, if any: "a photo of sks dog, on a beach". */
export function withCaption(prompt: string, caption?: string): string {
  return caption ? `${prompt}, ${caption}` : prompt;
}

/**
 * Image sampling as users ask for it: a prompt, seeds, a count and a batch size. Each image has
 * its own seeded generator (initial latents, then ancestral noise), so an image depends only on
 * its seed and settings, not on which batch it was computed in. Pure compute: the caller writes
 * files and reports progress. The generators are asynchronous because the decoded pixels are
 * read back with `await data()`, which never blocks a GPU backend's queue.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { Rng } from '../random.js';
import { slerpNoise } from '../variation-seed.js';
import { modelLatentGrid, modelPromptLength } from '../sizes.js';
import { createScheduler, type SchedulerKind } from '../schedulers/index.js';
import type { SigmaSchedule } from '../schedulers/sampler-names.js';
import { disposeConditioning, encodeRunConditioning, tileConditioning, type RunConditioning } from '../prompt/conditioning.js';
import type { EmphasisMode } from '../prompt/chunks.js';
import { throwIfDeviceError } from '../../backend/webgpu-kernels.js';
import { PainterError } from '../../errors.js';
import { decodeLatentsRaw, denoise } from './text-to-image.js';

export interface GenerateRequest {
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidance: number;
  scheduler: SchedulerKind;
  seed: number;
  count: number;
  batch: number;
  width: number;
  height: number;
  clipSkip: number;
  /** The σ spacing of σ-space samplers (default: the model's scheduler config). */
  schedule?: SigmaSchedule;
  /** AUTOMATIC1111's variation seed: image i's noise slerped toward that of `seed + i` by `strength`. */
  variation?: { seed: number; strength: number };
  /** How `(word:1.2)` emphasis is applied (default 'lpw'; 'none' reads it literally). */
  emphasis?: EmphasisMode;
  /** Initial latents for all images, NCHW [count, C, h, w] (diffusers' layout), row-major. */
  initLatents?: Float32Array;
  /** Token-embedding table override (learned embeddings). */
  tokenEmbedding?: tf.Tensor;
  /** Learned rows appended at an offset (Textual Inversion during training). */
  extraTokens?: { offset: number; rows: tf.Tensor };
  /** Classifier guidance on the model output (pipeline/classifier-guidance.ts). */
  guide?: (t: number, latents: tf.Tensor4D, output: tf.Tensor) => tf.Tensor;
}

export interface GeneratedImage {
  index: number;
  seed: number;
  width: number;
  height: number;
  /** RGB, row-major HWC, as diffusers' numpy_to_pil rounds: round(x·255). */
  pixels: Uint8Array;
}

export type GenerateEvent =
  | { kind: 'step'; step: number; steps: number; images: number[] }
  | { kind: 'image'; image: GeneratedImage };

/** Phase 1: the prompt embeddings (text encoder), with their edit schedules over the steps. */
export function encodeRequest(model: StableDiffusion, req: GenerateRequest): RunConditioning {
  const textOpts = { clipSkip: req.clipSkip, tokenEmbedding: req.tokenEmbedding, extraTokens: req.extraTokens, emphasis: req.emphasis };
  return encodeRunConditioning(model, req.prompt, req.guidance > 1 ? req.negativePrompt : undefined, req.steps, textOpts);
}

function batches(req: GenerateRequest): number[][] {
  const out: number[][] = [];
  for (let first = 0; first < req.count; first += req.batch) {
    out.push(Array.from({ length: Math.min(req.batch, req.count - first) }, (_, i) => first + i));
  }
  return out;
}

function checkInitLatents(model: StableDiffusion, req: GenerateRequest): void {
  const { h, w, c } = modelLatentGrid(model, req.width, req.height);
  if (req.initLatents && req.initLatents.length !== req.count * c * h * w) {
    throw new RangeError(`initial latents hold ${req.initLatents.length} values; ${req.count} image(s) of [${c}, ${h}, ${w}] need ${req.count * c * h * w}`);
  }
}

/** Phase 2 for one batch: denoise from seeded (or given) initial latents; returns the final latents. */
function* denoiseBatch(model: StableDiffusion, req: GenerateRequest, cond: RunConditioning, indices: number[]): Generator<GenerateEvent, tf.Tensor4D, void> {
  const { h, w, c } = modelLatentGrid(model, req.width, req.height);
  const perImage = c * h * w;
  const n = indices.length;
  const rngs = indices.map((i) => new Rng(req.seed + i));
  // Initial latents z_T ~ N(0, I), drawn per image in NCHW order (the layout --latents files use).
  const nchw = new Float32Array(n * perImage);
  indices.forEach((img, i) => {
    let values = req.initLatents ? req.initLatents.subarray(img * perImage, (img + 1) * perImage) : rngs[i]!.normals(perImage);
    if (req.variation && req.variation.strength > 0) {
      // A1111's variation seed: the image's noise slerped toward the noise of subseed + i.
      values = slerpNoise(req.variation.strength, values, new Rng(req.variation.seed + img).normals(perImage), [c, h, w]);
    }
    nchw.set(values, i * perImage);
  });
  const latents = tf.tidy(() => tf.tensor4d(nchw, [n, c, h, w]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
  const scheduler = createScheduler(req.scheduler, model.scheduler, req.steps, { sigmas: req.schedule });
  const conditioning = tileConditioning(cond, n);
  const noise = (_step: number, shape: number[]) => {
    const [, hh, ww, cc] = shape as [number, number, number, number];
    const data = new Float32Array(n * hh * ww * cc);
    rngs.forEach((r, i) => data.set(r.normals(hh * ww * cc), i * hh * ww * cc));
    return tf.tensor4d(data, [n, hh, ww, cc]);
  };
  const loop = denoise(model, { scheduler, conditioning, guidance: req.guidance, latents, noise, guide: req.guide });
  try {
    let r = loop.next();
    while (!r.done) {
      yield { kind: 'step', step: r.value.step + 1, steps: r.value.total, images: indices };
      r = loop.next();
    }
    return r.value;
  } finally {
    loop.return(undefined as unknown as tf.Tensor4D);
    scheduler.dispose();
    latents.dispose();
    disposeConditioning(conditioning);
  }
}

/** Phase 3 for one batch: VAE decode to 8-bit RGB images (disposes the latents). */
/**
 * Final latents decoded to 8-bit RGB (row-major HWC per image) and, per image, whether every
 * decoded value was finite; read with `await data()`. Disposes the latents.
 */
export async function decodeToPixels(model: StableDiffusion, final: tf.Tensor4D): Promise<{ data: Int32Array; finite: Uint8Array }> {
  const [pixels, finite] = tf.tidy(() => {
    const raw = decodeLatentsRaw(model, final);
    // |x| < ∞ is false for NaN and ±∞ alike: per image, whether every value is finite.
    const ok = tf.all(tf.less(tf.abs(raw), Infinity), [1, 2, 3]);
    // As decodeLatents: clip(x/2 + 1/2, 0, 1), then round(·255) as diffusers' numpy_to_pil.
    const px = tf.round(tf.mul(tf.clipByValue(tf.add(tf.mul(raw, 0.5), 0.5), 0, 1), 255)).toInt();
    return [px, ok];
  });
  final.dispose();
  try {
    const [data, ok] = (await Promise.all([pixels.data(), finite.data()])) as [Int32Array, Uint8Array];
    throwIfDeviceError();
    return { data, finite: ok };
  } finally {
    tf.dispose([pixels, finite]);
  }
}

export async function* decodeBatch(model: StableDiffusion, req: GenerateRequest, indices: number[], final: tf.Tensor4D): AsyncGenerator<GenerateEvent, void, void> {
  const { data, finite: ok } = await decodeToPixels(model, final);
  const size = req.width * req.height * 3;
  for (let i = 0; i < indices.length; i++) {
    if (!ok[i]) {
      throw new PainterError(
        `sampling produced NaN or infinite values (the image of seed ${req.seed + indices[i]!}), so no PNG was written for it; the model's weights may hold corrupt values, or a setting is extreme (guidance ${req.guidance})`,
      );
    }
    yield {
      kind: 'image',
      image: { index: indices[i]!, seed: req.seed + indices[i]!, width: req.width, height: req.height, pixels: Uint8Array.from(data.subarray(i * size, (i + 1) * size)) },
    };
  }
}

/** Sampling with the whole model resident: encode, then denoise and decode batch by batch. */
export async function* sampleImages(model: StableDiffusion, req: GenerateRequest): AsyncGenerator<GenerateEvent, void, void> {
  checkInitLatents(model, req);
  const cond = encodeRequest(model, req);
  try {
    for (const indices of batches(req)) {
      const final = yield* denoiseBatch(model, req, cond, indices);
      yield* decodeBatch(model, req, indices, final);
    }
  } finally {
    disposeConditioning(cond);
  }
}

export type PipelinePart = 'text_encoder' | 'unet' | 'vae';

/** Loads a model holding only the given parts' weights (configs and tokenizer always), and frees it. */
export interface PartLoader {
  load(parts: PipelinePart[]): StableDiffusion;
  release(model: StableDiffusion): void;
}

/**
 * Sampling holding one component at a time (text encoder → UNet → VAE), for models that do not
 * fit in memory whole: the same images as `sampleImages`, with only latents kept between phases.
 */
export async function* sampleImagesPhased(loader: PartLoader, req: GenerateRequest): AsyncGenerator<GenerateEvent, void, void> {
  const text = loader.load(['text_encoder']);
  let cond: RunConditioning;
  try {
    checkInitLatents(text, req);
    cond = encodeRequest(text, req);
  } finally {
    loader.release(text);
  }
  const finals: tf.Tensor4D[] = [];
  const groups = batches(req);
  try {
    try {
      const unet = loader.load(['unet']);
      try {
        for (const indices of groups) finals.push(yield* denoiseBatch(unet, req, cond, indices));
      } finally {
        loader.release(unet);
      }
    } finally {
      disposeConditioning(cond);
    }
    const vae = loader.load(['vae']);
    try {
      for (let b = 0; b < groups.length; b++) {
        const final = finals[b]!;
        finals[b] = undefined as unknown as tf.Tensor4D;
        yield* decodeBatch(vae, req, groups[b]!, final);
      }
    } finally {
      loader.release(vae);
    }
  } finally {
    for (const f of finals) f?.dispose();
  }
}

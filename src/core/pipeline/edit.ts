/**
 * Editing an existing image on the same core as text-to-image, as diffusers' pipelines do:
 * - image-to-image (SDEdit, StableDiffusionImg2ImgPipeline): the input's latents noised to the
 *   strength's timestep, then denoised from there;
 * - a masked edit on an ordinary 4-channel model (Blended Latent Diffusion, diffusers'
 *   StableDiffusionInpaintPipeline around a 4-channel UNet): after every step the latents outside
 *   the mask are replaced by the input's, noised to the next timestep (clean after the last);
 * - an inpainting model (9-channel UNet): the UNet also sees the mask and the masked image's
 *   latents, and nothing is pasted.
 * Every random draw comes from the image's seeded generator in diffusers' order (image posterior,
 * start noise, masked-image posterior, then per-step noise), or from given draws so that
 * diffusers' results can be reproduced exactly.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import type { StableDiffusion } from '../model.js';
import { vaeEncode, vaeLatentFactor, vaeSample } from '../models/vae.js';
import { Rng } from '../random.js';
import { createScheduler, type Scheduler } from '../schedulers/index.js';
import type { GenerateRequest } from './generate.js';
import { denoise } from './text-to-image.js';
import { encodeRunConditioning, type RunConditioning } from '../prompt/conditioning.js';

export type EditMode = 'img2img' | 'blend' | 'inpaint';

/** Random tensors given instead of drawn (diffusers' stored draws), NCHW like diffusers' tensors. */
export interface EditDraws {
  /** VAE posterior noise of the image: z = mean + std·posterior, [1, C, h, w]. */
  posterior?: Float32Array;
  /** Noise added at the start timestep, [1, C, h, w]. */
  noise?: Float32Array;
  /** VAE posterior noise of the masked image (inpainting models), [1, C, h, w]. */
  posteriorMasked?: Float32Array;
  /** Noise of each step for ancestral samplers, [steps, 1, C, h, w]. */
  stepNoise?: Float32Array;
}

/** What text-to-image also takes: prompts, sampler, seed (image i uses seed + i). */
export interface EditRequest extends Pick<GenerateRequest, 'prompt' | 'negativePrompt' | 'steps' | 'guidance' | 'scheduler' | 'seed' | 'clipSkip' | 'tokenEmbedding' | 'emphasis' | 'schedule'> {
  /** How much of the schedule runs: 1 starts from (nearly) pure noise, 0.3 keeps most of the input. */
  strength: number;
  width: number;
  height: number;
  /** The input image, RGB row-major HWC in [−1, 1] (width × height × 3). */
  image: Float32Array;
  /** 1 = repaint, 0 = keep, per pixel (width × height), already binarised. */
  mask?: Float32Array;
  draws?: EditDraws;
}

export interface EditPlan {
  mode: EditMode;
  /** Index of the first timestep the loop runs (diffusers' t_start). */
  startIndex: number;
  /** Steps the loop runs. */
  stepsRun: number;
}

/** The edit a model and request make, and where the schedule starts (diffusers' get_timesteps). */
export function planEdit(model: StableDiffusion, req: Pick<EditRequest, 'steps' | 'strength' | 'mask'>): EditPlan {
  const channels = model.unet.config.in_channels;
  const latentChannels = model.vae.config.latent_channels;
  let mode: EditMode;
  if (channels === 2 * latentChannels + 1) {
    if (!req.mask) throw new PainterError('this is an inpainting model (its UNet takes a mask): give --mask FILE, white where it should repaint');
    mode = 'inpaint';
  } else if (channels === latentChannels) mode = req.mask ? 'blend' : 'img2img';
  else throw new PainterError(`the UNet takes ${channels} input channels; painter edits with ${latentChannels} (ordinary) or ${2 * latentChannels + 1} (inpainting) channels`);
  if (!(req.strength > 0 && req.strength <= 1)) throw new PainterError(`--strength must be in (0, 1]; got ${req.strength}`);
  const init = Math.min(Math.floor(req.steps * req.strength), req.steps);
  const startIndex = Math.max(req.steps - init, 0);
  if (init === 0) throw new PainterError(`--strength ${req.strength} with --steps ${req.steps} runs no denoising step; raise --strength or --steps (at least ${Math.ceil(1 / req.strength)} steps)`);
  return { mode, startIndex, stepsRun: req.steps - startIndex };
}

/** NHWC tensor from an NCHW host array of [1, C, h, w]. */
function fromNchw(data: Float32Array, c: number, h: number, w: number, what: string): tf.Tensor4D {
  if (data.length !== c * h * w) throw new PainterError(`the given ${what} holds ${data.length} values; this edit needs [1, ${c}, ${h}, ${w}] (${c * h * w})`);
  return tf.tidy(() => tf.tensor4d(data, [1, c, h, w]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
}

/** Standard-normal draws of one image, from its generator or from the given draws. */
class Draws {
  constructor(
    private readonly rng: Rng,
    private readonly given: EditDraws | undefined,
    private readonly grid: { c: number; h: number; w: number },
  ) {}

  /** The next draw of `key`: the given tensor, else the generator's next values (NCHW order). */
  take(key: 'posterior' | 'noise' | 'posteriorMasked'): tf.Tensor4D {
    const { c, h, w } = this.grid;
    const given = this.given?.[key];
    return fromNchw(given ?? this.rng.normals(c * h * w), c, h, w, key);
  }

  step(i: number): tf.Tensor4D {
    const { c, h, w } = this.grid;
    const n = c * h * w;
    const given = this.given?.stepNoise;
    if (given && given.length < (i + 1) * n) throw new PainterError(`the given step_noise holds ${given.length / n} step(s); this edit runs more`);
    return fromNchw(given ? given.subarray(i * n, (i + 1) * n) : this.rng.normals(n), c, h, w, 'step_noise');
  }
}

/** A picture as latents: scaling_factor · (mean + std·posterior), NHWC. */
export function encodeLatents(model: StableDiffusion, image: tf.Tensor4D, posterior: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const p = vaeEncode(model.vae.params, model.vae.config, image);
    return tf.mul(vaeSample(p, posterior), model.vae.config.scaling_factor) as tf.Tensor4D;
  });
}

/**
 * A picture (RGB row-major HWC in [−1, 1]) as latents, NHWC: its VAE posterior sampled with the
 * given draw (NCHW [1, C, h, w]) or with its seed's generator.
 */
export function pictureLatents(model: StableDiffusion, picture: { pixels: Float32Array; width: number; height: number }, seed: number, posterior?: Float32Array): tf.Tensor4D {
  const f = vaeLatentFactor(model.vae.config);
  const [c, h, w] = [model.vae.config.latent_channels, picture.height / f, picture.width / f];
  return tf.tidy(() => {
    const image = tf.tensor4d(picture.pixels, [1, picture.height, picture.width, 3]);
    return encodeLatents(model, image, fromNchw(posterior ?? new Rng(seed).normals(c * h * w), c, h, w, 'posterior'));
  });
}

/** Latents [1, h, w, C] as the NCHW host array files and `initLatents` hold; disposes them. */
export async function latentsToNchw(latents: tf.Tensor4D): Promise<Float32Array> {
  const nchw = tf.tidy(() => latents.transpose([0, 3, 1, 2]));
  latents.dispose();
  try {
    return (await nchw.data()) as Float32Array;
  } finally {
    nchw.dispose();
  }
}

/** The pixel mask at the latent grid, as diffusers' F.interpolate (nearest): mask[i·f, j·f]. */
function latentMask(mask: tf.Tensor4D, f: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [, h, w] = mask.shape;
    const rows = tf.range(0, h, f, 'int32');
    const cols = tf.range(0, w, f, 'int32');
    return tf.gather(tf.gather(mask, rows, 1), cols, 2) as tf.Tensor4D;
  });
}

export interface EditLoopInput {
  scheduler: Scheduler;
  plan: EditPlan;
  latents: tf.Tensor4D;
  latentsNoised: boolean;
  unetExtra?: tf.Tensor4D;
  afterStep?: (index: number, latents: tf.Tensor4D) => tf.Tensor4D;
  noise: (step: number) => tf.Tensor4D;
  /** Tensors the loop's inputs hold, freed with it. */
  owned: tf.Tensor[];
}

/**
 * Everything the denoising loop of one edited image starts from: start latents, an inpainting
 * model's extra channels, the blend after each step, and the step noise. Draws happen here, in
 * diffusers' order.
 */
export function prepareEdit(model: StableDiffusion, req: EditRequest, index: number): EditLoopInput {
  const planned = planEdit(model, req);
  const f = vaeLatentFactor(model.vae.config);
  if (req.width % f !== 0 || req.height % f !== 0) throw new RangeError(`prepareEdit: ${req.width}×${req.height} is not a multiple of ${f}`);
  const grid = { c: model.vae.config.latent_channels, h: req.height / f, w: req.width / f };
  const draws = new Draws(new Rng(req.seed + index), index === 0 ? req.draws : undefined, grid);
  const scheduler = createScheduler(req.scheduler, model.scheduler, req.steps, { sigmas: req.schedule });
  // A sampler with several model evaluations per step (Heun) starts at step k's first entry.
  const begin = planned.startIndex * (scheduler.order ?? 1);
  const plan = { ...planned, startIndex: begin, stepsRun: scheduler.timesteps.length - begin };
  const owned: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => (owned.push(t), t);
  const image = keep(tf.tensor4d(req.image, [1, req.height, req.width, 3]));
  const maxStrength = req.strength === 1;
  // 1. The input's latents (an inpainting model at full strength never looks at the image).
  const imageLatents = plan.mode === 'inpaint' && maxStrength ? undefined : keep(encodeLatents(model, image, keep(draws.take('posterior'))));
  // 2. The start: the input noised to t_start; masked edits at full strength start from noise.
  const noise = keep(draws.take('noise'));
  const fromNoise = plan.mode !== 'img2img' && maxStrength;
  const latents = fromNoise ? noise : keep(scheduler.addNoise(imageLatents!, noise, plan.startIndex) as tf.Tensor4D);
  const input: EditLoopInput = {
    scheduler,
    plan,
    latents,
    latentsNoised: !fromNoise,
    noise: (step) => draws.step(step),
    owned,
  };
  if (plan.mode === 'img2img') return input;
  // 3. The mask at the latent grid, and the masked image's latents (drawn for a 4-channel blend
  //    too, as diffusers does, though only an inpainting model uses them).
  const pixelMask = keep(tf.tensor4d(req.mask!, [1, req.height, req.width, 1]));
  const mask = keep(latentMask(pixelMask, f));
  const masked = keep(tf.tidy(() => tf.mul(image, tf.cast(tf.less(pixelMask, 0.5), 'float32')) as tf.Tensor4D));
  const maskedLatents = keep(encodeLatents(model, masked, keep(draws.take('posteriorMasked'))));
  if (plan.mode === 'inpaint') {
    input.unetExtra = keep(tf.concat([mask, maskedLatents], 3) as tf.Tensor4D);
    return input;
  }
  // Blended Latent Diffusion: outside the mask, the input noised to the next timestep.
  const last = scheduler.timesteps.length - 1;
  const keepOut = keep(tf.sub(1, mask) as tf.Tensor4D);
  input.afterStep = (i, stepped) => {
    const known = i < last ? scheduler.addNoise(imageLatents!, noise, i + 1) : imageLatents!;
    return tf.add(tf.mul(keepOut, known), tf.mul(mask, stepped)) as tf.Tensor4D;
  };
  return input;
}

/** The denoising loop of one edited image; yields after every step, returns the final latents. */
export function* editLoop(model: StableDiffusion, req: EditRequest, index: number, cond: RunConditioning) {
  const input = prepareEdit(model, req, index);
  const loop = denoise(model, {
    scheduler: input.scheduler,
    conditioning: cond,
    guidance: req.guidance,
    latents: input.latents,
    latentsNoised: input.latentsNoised,
    startIndex: input.plan.startIndex,
    unetExtra: input.unetExtra,
    afterStep: input.afterStep,
    noise: (step) => input.noise(step),
  });
  try {
    let r = loop.next();
    while (!r.done) {
      yield r.value;
      r = loop.next();
    }
    return r.value;
  } finally {
    loop.return(undefined as unknown as tf.Tensor4D);
    input.scheduler.dispose();
    tf.dispose(input.owned);
  }
}

/** The prompt embeddings of an edit with their edit schedules (the text encoder's phase); free with disposeConditioning. */
export function encodeEditPrompts(model: StableDiffusion, req: EditRequest): RunConditioning {
  const opts = { clipSkip: req.clipSkip, tokenEmbedding: req.tokenEmbedding, emphasis: req.emphasis };
  return encodeRunConditioning(model, req.prompt, req.guidance > 1 ? req.negativePrompt : undefined, req.steps, opts);
}

/**
 * A validation loss on held-out images: the diffusion loss at fixed timesteps and fixed noise,
 * on the posterior mean of each image's centre crop, so the only thing that changes between two
 * evaluations is the trained weights. The training loss of a few images is dominated by which
 * timestep and noise each step drew (a Textual Inversion run's raw losses span 0.06–1.2 around a
 * flat mean); this curve shows learning, or overfitting when it turns up. As kohya's validation
 * (sd-scripts' --validation_split) it uses the plain ε/v mean squared error, without min-SNR-γ.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import type { UNetConfig } from '../core/models/unet.js';
import type { Params } from '../core/params.js';
import { Rng } from '../core/random.js';
import { noiseSchedule, type PredictionType } from '../core/schedulers/index.js';
import { diffusionLoss } from '../core/training/loss.js';
import type { SourceImage } from '../io/dataset.js';
import { disposeViews, encodeViews, type View } from './steps.js';

/** Timesteps per held-out image: the centres of equal strata of [0, T). */
export const VALIDATION_TIMESTEPS = 5;

export interface HeldOutSet {
  views: View[];
  /** The training prompt of each view's image (without augmentation). */
  prompts: string[];
  timesteps: number[];
  /** ε per view, [VALIDATION_TIMESTEPS, h, w, C] row-major. */
  noise: Float32Array[];
}

/** Encodes the held-out images once (centre crop, not mirrored) and fixes their noise from `seed`. */
export function heldOutSet(model: StableDiffusion, images: readonly SourceImage[], prompts: readonly string[], resolution: number, seed: number): HeldOutSet {
  const views = encodeViews(model, [...images], resolution, true, false, seed);
  const T = model.scheduler.num_train_timesteps;
  const timesteps = Array.from({ length: VALIDATION_TIMESTEPS }, (_, i) => Math.floor(((i + 0.5) * T) / VALIDATION_TIMESTEPS));
  const rng = new Rng(seed + 0x7a11d);
  const noise = views.map((v) => rng.normals(VALIDATION_TIMESTEPS * v.mean.size));
  return { views, prompts: views.map((v) => prompts[v.image]!), timesteps, noise };
}

export function disposeHeldOut(set: HeldOutSet | undefined): void {
  if (set) disposeViews(set.views);
}

/**
 * The mean loss over the held-out views at the fixed timesteps. `context` encodes prompts with
 * the current text side (e.g. a learnt embedding); `unet` gives the current UNet weights.
 */
export async function heldOutLoss(model: StableDiffusion, set: HeldOutSet, unet: () => { params: Params; config: UNetConfig }, context: (prompts: string[]) => tf.Tensor3D): Promise<number> {
  const schedule = noiseSchedule(model.scheduler);
  const predictionType = model.scheduler.prediction_type as PredictionType;
  const sf = model.vae.config.scaling_factor;
  let sum = 0;
  for (let i = 0; i < set.views.length; i++) {
    const v = set.views[i]!;
    const k = set.timesteps.length;
    const loss = tf.tidy(() => {
      const latents = tf.mul(tf.tile(v.mean, [k, 1, 1, 1]), sf) as tf.Tensor4D;
      const ctx = context([set.prompts[i]!]);
      const input = {
        latents,
        noise: tf.tensor4d(set.noise[i]!, latents.shape),
        timesteps: set.timesteps,
        encoderHiddenStates: tf.tile(ctx, [k, 1, 1]) as tf.Tensor3D,
        positionWeights: v.weights ? (tf.tile(v.weights, [k, 1, 1, 1]) as tf.Tensor4D) : undefined,
      };
      return diffusionLoss(unet(), schedule, input, { predictionType });
    });
    sum += (await loss.data())[0]!;
    loss.dispose();
  }
  return sum / set.views.length;
}

/**
 * DDIM inversion of a real picture: its latents carried up the noise levels by the inverse DDIM
 * update (schedulers/ddim-inverse.ts), as diffusers' DiffEdit pipeline inverts (guidance 1 by
 * default). Sampling with DDIM from the result, with the same prompt, steps and guidance,
 * regenerates the picture up to the approximation's error.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { unetForward } from '../models/unet.js';
import { DdimInverseScheduler } from '../schedulers/ddim-inverse.js';

export interface InversionInput {
  /** The picture's latents (scaling_factor · z), NHWC [1, h, w, C]. */
  latents: tf.Tensor4D;
  promptEmbeds: tf.Tensor3D;
  /** Needed when guidance > 1. */
  negativeEmbeds?: tf.Tensor3D;
  /** Classifier-free guidance during inversion (1, the default, runs the conditional branch only). */
  guidance: number;
  steps: number;
}

export interface InversionStep {
  step: number;
  total: number;
  timestep: number;
  /** Latents after this step (owned by the loop). */
  latents: tf.Tensor4D;
}

/** Yields after every inverse step; returns the inverted latents (owned by the caller). */
export function* ddimInvert(model: StableDiffusion, input: InversionInput): Generator<InversionStep, tf.Tensor4D, void> {
  const scheduler = new DdimInverseScheduler(model.scheduler, input.steps);
  const guided = input.guidance > 1;
  if (guided && !input.negativeEmbeds) throw new Error('ddimInvert: guidance > 1 needs negativeEmbeds');
  const context = guided ? tf.concat([input.negativeEmbeds!, input.promptEmbeds], 0) : tf.clone(input.promptEmbeds);
  let latents = tf.clone(input.latents);
  const total = scheduler.timesteps.length;
  try {
    for (let i = 0; i < total; i++) {
      const t = scheduler.timesteps[i]!;
      const next = tf.tidy(() => {
        const modelIn = guided ? (tf.concat([latents, latents], 0) as tf.Tensor4D) : latents;
        let out: tf.Tensor = unetForward(model.unet.params, model.unet.config, modelIn, t, context as tf.Tensor3D);
        if (guided) {
          const [uncond, cond] = tf.split(out, 2, 0);
          out = tf.add(uncond!, tf.mul(tf.sub(cond!, uncond!), input.guidance));
        }
        return scheduler.step(out, t, latents) as tf.Tensor4D;
      });
      latents.dispose();
      latents = next;
      yield { step: i, total, timestep: t, latents };
    }
    const result = latents;
    latents = undefined as unknown as tf.Tensor4D;
    return result;
  } finally {
    context.dispose();
    latents?.dispose();
  }
}

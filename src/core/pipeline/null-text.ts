/**
 * Null-text inversion (Mokady et al. 2023, "Null-text Inversion for Editing Real Images using
 * Guided Diffusion Models", Algorithm 1): DDIM inversion at guidance 1 gives a trajectory
 * z*_0 … z*_N that guided sampling (w > 1) drifts away from. For each sampling step the
 * unconditional ("null-text") embedding ∅_t is optimised so that the guided DDIM step from the
 * current latents lands on the inverted trajectory:
 *
 *   min_∅t ‖ z*_{t−1} − DDIM(z̄_t, t, ε_∅t + w·(ε_C − ε_∅t)) ‖²
 *
 * starting from the previous step's ∅ (the first from the empty prompt's embedding), with Adam
 * at lr 0.01·(1 − i/100), at most 10 iterations, stopping early below 1e-5 + i·2e-5 — the
 * settings of the authors' code. Sampling with the per-step ∅_t and the same prompt and
 * guidance then reconstructs the picture, and Prompt-to-Prompt edits it.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { unetForward } from '../models/unet.js';
import { DdimScheduler } from '../schedulers/ddim.js';

export interface NullTextInput {
  /** The DDIM-inversion trajectory z*_0 (the picture's latents) … z*_N, NHWC [1, h, w, C]. */
  trajectory: readonly tf.Tensor4D[];
  /** The source prompt's embeddings [1, L, C]. */
  promptEmbeds: tf.Tensor3D;
  /** Where ∅ starts: the empty (or negative) prompt's embeddings [1, L, C]. */
  nullEmbeds: tf.Tensor3D;
  guidance: number;
  /** Inner Adam iterations per step (default 10). */
  innerSteps?: number;
  /** Early-stop threshold at the first step (default 1e-5; + 2e-5 per step). */
  epsilon?: number;
}

export interface NullTextStep {
  step: number;
  total: number;
  /** Reconstruction loss after the last iteration of this step. */
  loss: number;
  iterations: number;
}

/** The guided DDIM step from `latents` at t with unconditional/conditional outputs. */
function guidedStep(scheduler: DdimScheduler, uncond: tf.Tensor, cond: tf.Tensor, guidance: number, t: number, latents: tf.Tensor): tf.Tensor {
  return scheduler.step(tf.add(uncond, tf.mul(tf.sub(cond, uncond), guidance)), t, latents).prevSample;
}

/**
 * Yields after each sampling step; returns ∅_t per step (owned by the caller), in the order the
 * sampler uses them. Loss values are read with `await data()`, so it runs on any backend.
 */
export async function* nullTextInversion(model: StableDiffusion, input: NullTextInput): AsyncGenerator<NullTextStep, tf.Tensor3D[], void> {
  const steps = input.trajectory.length - 1;
  const scheduler = new DdimScheduler(model.scheduler, steps);
  const innerSteps = input.innerSteps ?? 10;
  const epsilon = input.epsilon ?? 1e-5;
  const unet = (x: tf.Tensor, t: number, context: tf.Tensor) => unetForward(model.unet.params, model.unet.config, x as tf.Tensor4D, t, context as tf.Tensor3D);
  const found: tf.Tensor3D[] = [];
  let current = tf.clone(input.trajectory[steps]!);
  let start = tf.clone(input.nullEmbeds);
  try {
    for (let i = 0; i < steps; i++) {
      const t = scheduler.timesteps[i]!;
      const target = input.trajectory[steps - i - 1]!;
      const cond = tf.tidy(() => unet(current, t, input.promptEmbeds));
      const nullText = tf.variable(start, true);
      const optimizer = tf.train.adam(1e-2 * (1 - i / 100), 0.9, 0.999, 1e-8);
      let loss = Infinity;
      let iterations = 0;
      try {
        while (iterations < innerSteps) {
          const value = optimizer.minimize(() => tf.tidy(() => tf.mean(tf.square(tf.sub(guidedStep(scheduler, unet(current, t, nullText), cond, input.guidance, t, current), target)))) as tf.Scalar, true, [nullText])!;
          loss = (await value.data())[0]!;
          value.dispose();
          iterations++;
          if (loss < epsilon + i * 2e-5) break;
        }
        const kept = tf.clone(nullText) as tf.Tensor3D;
        found.push(kept);
        // z̄_{t−1}: the guided step with the optimised ∅_t.
        const next = tf.tidy(() => guidedStep(scheduler, unet(current, t, kept), cond, input.guidance, t, current)) as tf.Tensor4D;
        current.dispose();
        current = next;
        start.dispose();
        start = tf.clone(kept);
      } finally {
        optimizer.dispose();
        nullText.dispose();
        cond.dispose();
      }
      yield { step: i, total: steps, loss, iterations };
    }
    const result = found.splice(0);
    return result;
  } finally {
    tf.dispose([current, start, ...found]);
    scheduler.dispose();
  }
}

/**
 * The tensor math the σ-space samplers (Euler, Euler a, Heun, DPM++ SDE) share: the sample lives
 * at x = x_0 + σ·ε (Karras et al. 2022, EDM), the model sees x/√(σ²+1), and the samplers follow
 * the probability-flow ODE dx/dσ = (x − x̂_0)/σ (EDM eq. 3 with σ(t) = t). Each scalar is one
 * float32 torch op, as in diffusers.
 */
import * as tf from '@tensorflow/tfjs';
import { timestepAt, type PredictionType } from './common.js';
import { f32, sqrt32 } from './numerics.js';

/** x / √(σ² + 1): the variance-preserving input an ε- or v-model was trained on. */
export function sigmaScaleInput(sample: tf.Tensor, sigma: number): tf.Tensor {
  return tf.div(sample, sqrt32(f32(f32(sigma * sigma) + 1)));
}

/**
 * x̂_0 at level σ from the model output (EDM's preconditioning for v): ε: x − σ·ε̂;
 * v: c_skip·x + c_out·v with c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1); sample: the output.
 */
export function sigmaPredictOriginal(predictionType: PredictionType, modelOutput: tf.Tensor, sample: tf.Tensor, sigma: number): tf.Tensor {
  switch (predictionType) {
    case 'epsilon':
      return tf.sub(sample, tf.mul(modelOutput, sigma));
    case 'v_prediction': {
      const s2p1 = f32(f32(sigma * sigma) + 1);
      return tf.add(tf.mul(modelOutput, f32(-sigma / sqrt32(s2p1))), tf.div(sample, s2p1));
    }
    case 'sample':
      return tf.clone(modelOutput);
  }
}

/** d = (x − x̂_0)/σ, the slope dx/dσ of the probability-flow ODE at level σ. */
export function sigmaDerivative(sample: tf.Tensor, x0: tf.Tensor, sigma: number): tf.Tensor {
  return tf.div(tf.sub(sample, x0), sigma);
}

/** One Euler step along slope d from σ to σ_to: x + (σ_to − σ)·d. */
export function eulerStep(sample: tf.Tensor, derivative: tf.Tensor, sigma: number, sigmaTo: number): tf.Tensor {
  return tf.add(sample, tf.mul(derivative, f32(sigmaTo - sigma)));
}

/** x_0 + σ·ε at σ = sigmas[index], the level of timesteps[index] (image-to-image's start). */
export function sigmaAddNoise(timesteps: readonly number[], sigmas: Float32Array, original: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
  timestepAt(timesteps, index);
  const sigma = sigmas[index]!;
  return tf.tidy(() => tf.add(original, tf.mul(noise, sigma)));
}

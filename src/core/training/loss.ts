/**
 * The latent-diffusion training objective (Rombach et al. 2022, eq. 2):
 * L = E_{z₀, ε~N(0,I), t} ‖target − f_θ(z_t, t, c)‖², z_t = √ᾱ_t·z₀ + √(1−ᾱ_t)·ε,
 * where target is ε (epsilon models) or v = √ᾱ_t·ε − √(1−ᾱ_t)·z₀ (v-prediction models), with
 * optional min-SNR-γ weighting (Hang et al. 2023). Differentiable w.r.t. whatever weights the
 * caller made variables (embedding rows, LoRA adapters, the UNet).
 */
import * as tf from '@tensorflow/tfjs';
import type { CheckpointOptions } from '../models/checkpoint.js';
import { unetForward, type UNetConfig } from '../models/unet.js';
import type { Params } from '../params.js';
import { addNoise, trainingTarget, type NoiseSchedule, type PredictionType } from '../schedulers/index.js';

export interface LossInput {
  /** Clean latents z₀ (already multiplied by the VAE scaling factor), NHWC [B, h, w, C]. */
  latents: tf.Tensor4D;
  /** ε, same shape as the latents. */
  noise: tf.Tensor4D;
  /** One integer training timestep per batch element. */
  timesteps: number[];
  /** Text conditioning c = τ_θ(y), [B, L, C]. */
  encoderHiddenStates: tf.Tensor3D;
  /**
   * Per-position loss weights at latent resolution, [B, h, w, 1] (kohya's masked loss, with
   * weights instead of a 0/1 mask). Each sample's squared error is averaged with these weights
   * (Σ w·e² / Σ w over its elements), so the loss keeps its scale whatever the map.
   */
  positionWeights?: tf.Tensor4D;
}

export interface LossOptions {
  predictionType: PredictionType;
  /** γ of min-SNR-γ weighting; 0 or undefined: plain mean squared error. */
  minSnrGamma?: number;
  /** Per-element weights (e.g. λ for prior-preservation rows), [B]; default all 1. */
  sampleWeights?: number[];
  /**
   * Gradient checkpointing of the UNet's blocks, naming the UNet weights that train (none for
   * Textual Inversion); undefined keeps every activation for backprop.
   */
  checkpoint?: CheckpointOptions;
}

/**
 * `n` training timesteps in [0, T), one from each of n equal strata in random order within the
 * batch's slots: the same distribution as n uniform draws, with less variance in the batch's
 * loss (the low-discrepancy sampler of Kingma et al. 2021, "Variational diffusion models").
 */
export function stratifiedTimesteps(rng: { uniform(): number }, n: number, T: number): number[] {
  const ts = Array.from({ length: n }, (_, i) => Math.min(T - 1, Math.floor(((i + rng.uniform()) * T) / n)));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [ts[i], ts[j]] = [ts[j]!, ts[i]!];
  }
  return ts;
}

/** Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at integer timesteps. */
export function snr(schedule: NoiseSchedule, timesteps: number[]): number[] {
  return timesteps.map((t) => {
    const a = schedule.alphasCumprod[t]!;
    return a / (1 - a);
  });
}

/**
 * Per-sample loss weights: min-SNR-γ gives min(SNR, γ)/SNR for ε targets and
 * min(SNR, γ)/(SNR + 1) for v targets (as diffusers' training scripts compute them).
 */
export function lossWeights(schedule: NoiseSchedule, timesteps: number[], opts: LossOptions): number[] {
  const base = opts.sampleWeights ?? timesteps.map(() => 1);
  if (!opts.minSnrGamma) return base;
  const gamma = opts.minSnrGamma;
  return snr(schedule, timesteps).map((s, i) => {
    const clipped = Math.min(s, gamma);
    const w = opts.predictionType === 'v_prediction' ? clipped / (s + 1) : clipped / s;
    return w * base[i]!;
  });
}

/** Mean squared error per batch element, [B], optionally weighted per position. */
export function perSampleMse(pred: tf.Tensor, target: tf.Tensor, weights?: tf.Tensor4D): tf.Tensor1D {
  const b = pred.shape[0]!;
  const sq = tf.square(tf.sub(pred, target));
  if (!weights) return tf.mean(sq.reshape([b, -1]), 1) as tf.Tensor1D;
  const w = tf.broadcastTo(weights, sq.shape);
  // A crop whose mask is black everywhere contributes 0, not 0/0.
  return tf.div(tf.sum(tf.mul(sq, w).reshape([b, -1]), 1), tf.maximum(tf.sum(w.reshape([b, -1]), 1), 1e-12)) as tf.Tensor1D;
}

/**
 * The scalar training loss. Weighted per sample, then averaged over the batch, so that with
 * unit weights it equals F.mse_loss(pred, target, reduction='mean').
 */
export function diffusionLoss(unet: { params: Params; config: UNetConfig }, schedule: NoiseSchedule, input: LossInput, opts: LossOptions): tf.Scalar {
  return tf.tidy(() => {
    const { latents, noise, timesteps } = input;
    const noisy = addNoise(schedule, latents, noise, timesteps) as tf.Tensor4D;
    const t = tf.tensor1d(timesteps, 'float32');
    const pred = unetForward(unet.params, unet.config, noisy, t, input.encoderHiddenStates, { checkpoint: opts.checkpoint });
    const target = trainingTarget(opts.predictionType, schedule, latents, noise, timesteps);
    const perSample = perSampleMse(pred, target, input.positionWeights);
    const w = lossWeights(schedule, timesteps, opts);
    return tf.mean(tf.mul(perSample, tf.tensor1d(w))) as tf.Scalar;
  });
}

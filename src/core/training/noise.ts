/** Noise draws for training batches. */
import type { Rng } from '../random.js';

/**
 * Offset noise (Guttenberg 2023, as diffusers' --noise_offset): adds one N(0, σ²) value per
 * image and channel to ε, spread over the whole image, so the model learns to shift overall
 * brightness. `noise` is NHWC [batch, h, w, c], row-major; changed in place.
 */
export function addOffsetNoise(noise: Float32Array, batch: number, pixels: number, channels: number, strength: number, rng: Rng): void {
  if (strength <= 0) return;
  const per = pixels * channels;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < channels; c++) {
      const o = strength * rng.normal();
      for (let i = 0; i < pixels; i++) noise[b * per + i * channels + c]! += o;
    }
  }
}

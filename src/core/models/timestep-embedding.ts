/**
 * Sinusoidal timestep embedding, as diffusers' `get_timestep_embedding` (DDPM, after the
 * Transformer's positional encoding):
 *   freq_i = exp(−ln(max_period) · i / (half − downscale_freq_shift)),  i = 0 … half−1
 *   emb    = [sin(t·freq), cos(t·freq)]   (or [cos, sin] with flip_sin_to_cos)
 * Timesteps may be fractional (Euler-style schedulers); they go in unrounded.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * The frequencies as float32, rounded step by step as PyTorch's float32 ops round them
 * (scalar·arange, then ÷, then exp). At t≈1000 one ulp of a frequency moves t·freq by ~1e-4,
 * so matching the reference needs the same roundings, not a double-precision formula.
 */
export function timestepFrequencies(halfDim: number, downscaleFreqShift: number, maxPeriod = 10000): Float32Array {
  const out = new Float32Array(halfDim);
  const scale = Math.fround(-Math.log(maxPeriod));
  const denom = Math.fround(halfDim - downscaleFreqShift);
  for (let i = 0; i < halfDim; i++) {
    const exponent = Math.fround(Math.fround(scale * i) / denom);
    out[i] = Math.exp(exponent);
  }
  return out;
}

/** Embeds timesteps [B] (int or float) into [B, dim] float32. */
export function timestepEmbedding(
  timesteps: tf.Tensor1D,
  dim: number,
  flipSinToCos: boolean,
  downscaleFreqShift: number,
  maxPeriod = 10000,
): tf.Tensor2D {
  return tf.tidy(() => {
    const half = Math.floor(dim / 2);
    const freqs = tf.tensor2d(timestepFrequencies(half, downscaleFreqShift, maxPeriod), [1, half], 'float32');
    const args = tf.mul(timesteps.toFloat().reshape([-1, 1]), freqs);
    const sin = tf.sin(args);
    const cos = tf.cos(args);
    let emb = tf.concat(flipSinToCos ? [cos, sin] : [sin, cos], 1);
    // An odd dimension gets one zero column, as diffusers pads it.
    if (dim % 2 === 1) emb = tf.pad(emb, [[0, 0], [0, 1]]);
    return emb as tf.Tensor2D;
  });
}

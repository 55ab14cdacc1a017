/**
 * Blended Latent Diffusion's background reconstruction (Avrahami et al. 2023, "Method B: fine-tuning
 * the decoder's weights"). A masked edit keeps the input's latents outside the mask, but the VAE
 * decoder mixes every latent into every pixel (its mid-block attention sees the whole picture), so
 * the decoded background drifts from the input. The decoder is fine-tuned for this one picture:
 *   θ* = argmin_θ ‖D_θ(z₀) ⊙ m − x̂ ⊙ m‖² + λ ‖D_θ(z₀) ⊙ (1 − m) − x ⊙ (1 − m)‖²
 * with z₀ the edited latents, x̂ = D_θ₀(z₀) the decoded edit, x the input picture and m the edit
 * mask — the edit stays as generated inside the mask, the background becomes the input's — and
 * the result is decoded with θ*. The base model's weights are untouched.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { vaeDecode } from '../models/vae.js';
import type { Params } from '../params.js';
import { ADAMW_DEFAULTS, adamWStep, createAdamWState, disposeAdamWState } from '../training/optimizer.js';

export interface BackgroundFitOptions {
  /** Adam steps. */
  steps: number;
  lr: number;
  /** λ: the background term's weight against the edit's. */
  lambda: number;
}

export const BACKGROUND_FIT_DEFAULTS: BackgroundFitOptions = { steps: 100, lr: 1e-4, lambda: 100 };

/** The decoder's weights (what the fit trains): the post-quant conv and the decoder. */
const DECODER_KEY = /^(decoder\.|post_quant_conv\.)/;

export interface FittedDecoder {
  /** The VAE's weights with the fitted decoder (the encoder's are the model's own). */
  params: Params;
  /** The loss after each step (for reports and tests). */
  losses: number[];
  dispose(): void;
}

/**
 * Fits the decoder to `input` outside `mask` and to its own decoding of `latents` inside it.
 * `latents` are the edit's final latents (scaled as the UNet sees them), `input` the picture as
 * RGB in [−1, 1] [1, H, W, 3], `mask` [1, H, W, 1] with 1 where the edit may change the picture.
 */
export async function fitDecoderToBackground(model: StableDiffusion, latents: tf.Tensor4D, input: tf.Tensor4D, mask: tf.Tensor4D, opts: BackgroundFitOptions = BACKGROUND_FIT_DEFAULTS, onStep?: (step: number, loss: number) => void): Promise<FittedDecoder> {
  const { config } = model.vae;
  const z = tf.tidy(() => tf.div(latents, config.scaling_factor) as tf.Tensor4D);
  const edited = vaeDecode(model.vae.params, config, z);
  const vars = new Map<string, tf.Variable>();
  // A variable shares its tensor's buffer until the first update replaces it: the model's weights stay.
  for (const [k, t] of model.vae.params) if (DECODER_KEY.test(k)) vars.set(k, tf.variable(t, true, `background_fit_${k}_${Date.now()}`));
  const params: Params = new Map(model.vae.params);
  for (const [k, v] of vars) params.set(k, v);
  const adam = createAdamWState(vars);
  const losses: number[] = [];
  const keep = tf.tidy(() => tf.sub(1, mask) as tf.Tensor4D);
  try {
    for (let step = 1; step <= opts.steps; step++) {
      const { value, grads } = tf.variableGrads(() =>
        tf.tidy(() => {
          const out = vaeDecode(params, config, z);
          const inside = tf.mean(tf.mul(tf.square(tf.sub(out, edited)), mask));
          const outside = tf.mean(tf.mul(tf.square(tf.sub(out, input)), keep));
          return tf.add(inside, tf.mul(outside, opts.lambda)) as tf.Scalar;
        }),
      );
      const loss = (await value.data())[0]!;
      value.dispose();
      const named = new Map([...vars].map(([k, v]) => [k, grads[v.name]!] as const).filter(([, g]) => g !== undefined));
      adamWStep(vars, named, adam, { ...ADAMW_DEFAULTS, lr: opts.lr, weightDecay: 0 }, opts.lr);
      tf.dispose(Object.values(grads));
      losses.push(loss);
      onStep?.(step, loss);
    }
  } catch (e) {
    for (const v of vars.values()) v.dispose();
    throw e;
  } finally {
    disposeAdamWState(adam);
    tf.dispose([z, edited, keep]);
  }
  return {
    params,
    losses,
    dispose: () => {
      for (const v of vars.values()) v.dispose();
    },
  };
}

/**
 * painter-mini's VAE stages (pretrain.ts), one loss — MSE + L1 reconstruction of a posterior
 * sample, plus klWeight·KL(q(z|x) ‖ N(0, I)) while the encoder trains:
 *
 * - stage 1 (`vae/`): the whole VAE from scratch at the recipe's first, small size.
 * - stage 1b (`vae-hires/`, before the UNet exists): the whole VAE goes on at twice the size, as
 *   the UNet does in stage 4. Its encoder also encodes the 64×64 photos that Textual Inversion and
 *   DreamBooth learn from, so it must see that size.
 * - stage 5 (`vae-decoder/`, added to a finished run): only the decoder, the encoder frozen, as
 *   Stability fine-tuned SD's VAE decoder (sd-vae-ft-mse): the latents — and so the scaling factor
 *   and the UNet trained on them — stay valid.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { MiniConfigs } from './mini-config.js';
import type { PretrainHooks, PretrainSettings, StageSummary } from './pretrain.js';
import { BatchStream, DONE_FILE, engineConfig, imagesToArray, readDone, runStage, STAGE_SALT, summarise, variablePrefix, variables, writeComponent } from './pretrain-stages.js';
import { loadWeights, vaeDecode, vaeEncode, vaeParamShapes, writeBytesAtomic, type Params, type VaePosterior, type train } from '../../src/index.js';

export interface VaePhase {
  stage: 'vae' | 'vae-hires' | 'decoder';
  size: number;
  steps: number;
  /** The weights stages 1b and 5 start from (left as they are); stage 1 starts from seeded ones. */
  from?: Params;
}

/** Each stage's images and noise: the VAE streams, later stages past any index stage 1 reaches. */
const STREAM_OFFSET = { vae: 0, 'vae-hires': 2 ** 27, decoder: 2 ** 27 + 2 ** 26 } as const;

export const VAE_DIR = { vae: 'vae', 'vae-hires': 'vae-hires', decoder: 'vae-decoder' } as const;

/** Keys of the parameters stage 5 trains: everything after the latent. */
export function isDecoderKey(key: string): boolean {
  return key.startsWith('decoder.') || key.startsWith('post_quant_conv.');
}

export async function trainVaeStage(s: PretrainSettings, configs: MiniConfigs, phase: VaePhase, hooks: PretrainHooks): Promise<{ params: Params; summary: StageSummary }> {
  const dir = path.join(s.runDir, VAE_DIR[phase.stage]);
  const cfg = configs.vae;
  const { size, steps } = phase;
  const frozenEncoder = phase.stage === 'decoder';
  const what = { vae: 'stage 1 (vae)', 'vae-hires': 'stage 1b (vae)', decoder: 'stage 5 (vae decoder, frozen encoder)' }[phase.stage];
  const done = readDone(dir);
  if (done && done.steps >= steps) {
    hooks.log?.(`${what}: finished earlier (${done.steps} steps), reusing ${dir}`);
    return { params: loadWeights([path.join(dir, 'vae', 'diffusion_pytorch_model.safetensors')], vaeParamShapes(cfg), 'painter-mini vae'), summary: done };
  }
  const prefix = variablePrefix(phase.stage);
  let vars: Map<string, tf.Variable>;
  if (!phase.from) vars = variables(vaeParamShapes(cfg), s.seed * 8 + 1, prefix);
  else {
    vars = new Map();
    for (const [k, t] of phase.from) if (!frozenEncoder || isDecoderKey(k)) vars.set(k, tf.variable(t, true, `${prefix}/${k}`));
  }
  // A frozen encoder's tensors are the starting weights themselves.
  const params: Params = new Map([...(phase.from ?? vars)].map(([k, t]) => [k, vars.get(k) ?? t]));
  const data = new BatchStream(s.seed, STAGE_SALT.vae, s.vaeBatch, size, steps, { first: STREAM_OFFSET[phase.stage] });
  const b = s.vaeBatch;
  const latentShape: [number, number, number, number] = [b, size / 4, size / 4, cfg.latent_channels];
  let k = 0;
  const task: Parameters<typeof train>[0] = {
    vars,
    prepareBatch(rng) {
      const batch = data.take(k);
      data.request(++k);
      const x = imagesToArray(batch.images, size);
      const n = rng.normals(latentShape.reduce((a, c) => a * c, 1));
      // A frozen encoder's sample z = μ + σ·n is data, computed outside the tape.
      const fixed = frozenEncoder ? tf.tidy(() => sampleLatents(params, configs, tf.tensor4d(x, [b, size, size, 3]), n).z.dataSync() as Float32Array) : undefined;
      return () => {
        const image = tf.tensor4d(x, [b, size, size, 3]);
        if (fixed) return reconstruction(tf.sub(vaeDecode(params, cfg, tf.tensor4d(fixed, latentShape)), image));
        const { z, kl } = sampleLatents(params, configs, image, n);
        return tf.add(reconstruction(tf.sub(vaeDecode(params, cfg, z), image)), tf.mul(s.klWeight, kl)) as tf.Scalar;
      };
    },
    saveState: () => ({ k }),
    restoreState(state) {
      k = (state as { k: number }).k;
    },
    async saveResult(runDir) {
      await writeComponent(path.join(runDir, 'vae'), cfg, 'diffusion_pytorch_model.safetensors', params);
      return path.join(runDir, 'vae');
    },
  };
  try {
    hooks.log?.(`${what}: ${steps} steps of ${b} images at ${size}×${size}`);
    const engine = engineConfig(s, steps, s.vaeLr, 0, STAGE_SALT.vae);
    engine.seed += STREAM_OFFSET[phase.stage];
    const losses = await runStage(phase.stage, s, data, task, engine, dir, hooks, () => k);
    const summary = summarise(losses);
    await writeBytesAtomic(path.join(dir, DONE_FILE), JSON.stringify(summary));
    return { params: new Map([...params].map(([key, t]) => [key, tf.clone(t)])), summary };
  } finally {
    for (const v of vars.values()) v.dispose();
  }
}

/** The VAE stages' reconstruction loss: MSE + L1 per pixel. */
export function reconstruction(diff: tf.Tensor): tf.Scalar {
  return tf.add(tf.mean(tf.square(diff)), tf.mean(tf.abs(diff))) as tf.Scalar;
}

/** The reparameterised sample z = μ + σ·n of a posterior, `noise` holding n (the latents' size). */
export function posteriorSample(post: VaePosterior, noise: Float32Array): tf.Tensor4D {
  return tf.add(post.mean, tf.mul(post.std, tf.tensor4d(noise, post.mean.shape)));
}

/**
 * A posterior sample of `image` (so the reconstruction sees the posterior's spread) and
 * KL(N(μ, σ²) ‖ N(0, 1)) = ½(μ² + σ² − 1 − log σ²), averaged over latent elements.
 */
export function sampleLatents(params: Params, configs: MiniConfigs, image: tf.Tensor4D, noise: Float32Array): { z: tf.Tensor4D; kl: tf.Scalar } {
  const post = vaeEncode(params, configs.vae, image);
  const kl = tf.mul(0.5, tf.mean(tf.sub(tf.add(tf.square(post.mean), tf.exp(post.logvar)), tf.add(1, post.logvar)))) as tf.Scalar;
  return { z: posteriorSample(post, noise), kl };
}
